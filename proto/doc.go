// Package proto holds the wire types shared by the master, its workers and
// API clients: tenant ids, events, JSON values, errors with stable codes and
// the Mesophyll messages exchanged between the master and process workers.
//
// Nothing in this package does I/O; it only defines shapes and their JSON
// encodings so that every other package agrees on them.
package proto
