// Package mesophyll implements Mesophyll, the WebSocket protocol between the
// master process and its process workers.
//
// The master mounts a [Server] at /ws. A worker it spawned connects with
// [Dial], authenticating the upgrade request with its worker id (header
// X-Worker-Id) and the token the master set for that spawn with
// [Server.SetToken] (header Authorization: Bearer <token>). Every frame is a
// JSON text frame holding exactly one [proto.Message].
//
// The master talks to a connected worker through its [Conn]: DispatchEvent,
// RunScript and DropTenant are answered by a DispatchResponse with the same
// req_id; DispatchEventNoWait carries a seq instead and is acknowledged by an
// Ack once the worker has run it. The worker serves those requests with a
// [Handler] in [Client.Serve], sends a Heartbeat every interval announced in
// Hello, and uses the [Client] itself as its store: its store requests are
// answered by the master's [Backend] with StoreResponse frames.
//
// Many requests may be in flight on one connection in both directions; they
// are correlated by req_id and never wait for one another. A frame that is
// too large or malformed closes the connection with a WebSocket close code
// and a reason; calls waiting on a connection that ends fail at once with
// worker_unavailable (master side) or store_unavailable (worker side).
package mesophyll
