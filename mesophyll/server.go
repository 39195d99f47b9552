package mesophyll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/templateworker/templateworker/proto"
)

// Backend answers the store requests of workers. The master implements it
// around its store. Errors that are *proto.Error reach the worker with
// their code; any other error reaches it as store_unavailable.
type Backend interface {
	// Templates lists a tenant's templates.
	Templates(ctx context.Context, tenant proto.Id) ([]proto.Template, error)
	// TenantsFor lists the tenants owned by worker workerID that subscribe
	// to event.
	TenantsFor(ctx context.Context, workerID int, event string) ([]proto.Id, error)
	// KvGet returns the value of key and whether it exists.
	KvGet(ctx context.Context, tenant proto.Id, key string) (json.RawMessage, bool, error)
	// KvSet creates or replaces key.
	KvSet(ctx context.Context, tenant proto.Id, key string, value json.RawMessage) error
	// KvDelete removes key.
	KvDelete(ctx context.Context, tenant proto.Id, key string) error
	// KvFind lists the keys starting with prefix, ordered by key.
	KvFind(ctx context.Context, tenant proto.Id, prefix string) ([]proto.KVItem, error)
	// ScheduleEvent stores ev for tenant, due at at, for worker workerID
	// (which must own the tenant), and returns its id.
	ScheduleEvent(ctx context.Context, workerID int, tenant proto.Id, at time.Time, ev proto.Event) (string, error)
	// CancelEvent cancels the tenant's pending scheduled event id; false
	// when there is none.
	CancelEvent(ctx context.Context, workerID int, tenant proto.Id, id string) (bool, error)
	// ScheduledEvents lists the tenant's pending scheduled events in
	// delivery order.
	ScheduledEvents(ctx context.Context, workerID int, tenant proto.Id) ([]proto.ScheduledEvent, error)
}

// ServerOptions configure a Server. Callbacks may be nil; they run on the
// connection's reading goroutine, so they must return quickly.
type ServerOptions struct {
	// Workers is the number of workers; ids are 0 to Workers-1.
	Workers int
	// Backend answers the workers' store requests; without one they fail
	// with store_unavailable.
	Backend Backend
	// HeartbeatInterval is how often workers send a Heartbeat; a worker
	// silent for 3 intervals is hung. Default 1 s.
	HeartbeatInterval time.Duration
	// MaxFrame is the largest frame accepted, in bytes. Default 4 MiB.
	MaxFrame int64
	// StoreTimeout bounds one Backend call. Default 10 s.
	StoreTimeout time.Duration
	// Logger receives connection events and protocol violations.
	Logger zerolog.Logger

	// OnConnect is called when a worker has connected and received Hello.
	OnConnect func(workerID int, c *Conn)
	// OnDisconnect is called when a worker's connection has ended: with
	// nil when the worker closed it normally (after Shutdown), with the
	// cause otherwise (including Conn.Close and SetToken).
	OnDisconnect func(workerID int, c *Conn, err error)
	// OnHung is called when a worker missed 3 heartbeats; its connection
	// is closed, and OnDisconnect follows.
	OnHung func(workerID int)
	// OnAck is called when a worker acknowledges a nowait event (with the
	// error code if it failed).
	OnAck func(workerID int, ack proto.Ack)
	// OnHeartbeat is called for every heartbeat of a worker.
	OnHeartbeat func(workerID int, hb proto.Heartbeat)
}

// noBackend answers every store request with store_unavailable.
type noBackend struct{}

var errNoBackend = proto.Errorf(proto.CodeStoreUnavailable, "the master has no store")

func (noBackend) Templates(context.Context, proto.Id) ([]proto.Template, error) {
	return nil, errNoBackend
}
func (noBackend) TenantsFor(context.Context, int, string) ([]proto.Id, error) {
	return nil, errNoBackend
}
func (noBackend) KvGet(context.Context, proto.Id, string) (json.RawMessage, bool, error) {
	return nil, false, errNoBackend
}
func (noBackend) KvSet(context.Context, proto.Id, string, json.RawMessage) error { return errNoBackend }
func (noBackend) KvDelete(context.Context, proto.Id, string) error               { return errNoBackend }
func (noBackend) KvFind(context.Context, proto.Id, string) ([]proto.KVItem, error) {
	return nil, errNoBackend
}
func (noBackend) ScheduleEvent(context.Context, int, proto.Id, time.Time, proto.Event) (string, error) {
	return "", errNoBackend
}
func (noBackend) CancelEvent(context.Context, int, proto.Id, string) (bool, error) {
	return false, errNoBackend
}
func (noBackend) ScheduledEvents(context.Context, int, proto.Id) ([]proto.ScheduledEvent, error) {
	return nil, errNoBackend
}

// Server is the master's end of Mesophyll: an http.Handler that upgrades
// authenticated worker connections. It is safe for concurrent use.
type Server struct {
	opts ServerOptions
	log  zerolog.Logger

	mu    sync.Mutex
	slots []slot
}

// slot is the state of one worker id.
type slot struct {
	token      [sha256.Size]byte // hash of the current token
	hasToken   bool
	gen        uint64 // bumped by every SetToken
	connecting bool   // an upgrade is in progress
	conn       *Conn
}

// NewServer returns a server for opts.Workers workers. No worker can
// connect before SetToken gave it a token.
func NewServer(opts ServerOptions) *Server {
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = time.Second
	}
	if opts.MaxFrame <= 0 {
		opts.MaxFrame = DefaultMaxFrame
	}
	if opts.StoreTimeout <= 0 {
		opts.StoreTimeout = 10 * time.Second
	}
	if opts.Backend == nil {
		opts.Backend = noBackend{}
	}
	return &Server{
		opts:  opts,
		log:   opts.Logger.With().Str("component", "mesophyll").Logger(),
		slots: make([]slot, max(opts.Workers, 0)),
	}
}

// TokenLength is the length of the tokens NewToken returns.
const TokenLength = 64

// NewToken returns a fresh random token of TokenLength hex characters.
func NewToken() (string, error) {
	var b [TokenLength / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("mesophyll: generate token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// SetToken makes token the only one accepted for workerID from now on. A
// live connection authenticated with an earlier token is closed. It panics
// if workerID is outside [0, Workers).
func (s *Server) SetToken(workerID int, token string) {
	if workerID < 0 || workerID >= len(s.slots) {
		panic(fmt.Sprintf("mesophyll: SetToken: worker id %d outside [0, %d)", workerID, len(s.slots)))
	}
	s.mu.Lock()
	sl := &s.slots[workerID]
	sl.token = sha256.Sum256([]byte(token))
	sl.hasToken = true
	sl.gen++
	old := sl.conn
	s.mu.Unlock()
	if old != nil {
		old.closeWith(websocket.StatusPolicyViolation, "token replaced", errors.New("token replaced"))
	}
}

// Conn returns the live connection of workerID, or nil.
func (s *Server) Conn(workerID int) *Conn {
	if workerID < 0 || workerID >= len(s.slots) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.slots[workerID].conn
}

// ServeHTTP authenticates a worker's upgrade request and serves its
// connection until it ends. Mount it at /ws.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, gen, ok := s.admit(w, r)
	if !ok {
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		s.release(id, nil)
		s.log.Warn().Int("worker", id).Err(err).Msg("upgrade failed")
		return
	}
	ws.SetReadLimit(s.opts.MaxFrame)
	c := newConn(s, id, ws)
	// A worker that announces its frame limit takes Batch frames.
	peerMax, _ := strconv.ParseInt(r.Header.Get(maxFrameHeader), 10, 64)
	c.link.setBatchMax(peerMax)

	hello, _ := json.Marshal(proto.Message{Hello: &proto.Hello{
		HeartbeatIntervalMS: s.opts.HeartbeatInterval.Milliseconds(),
		MaxFrame:            s.opts.MaxFrame,
	}})
	if err := c.link.send(context.Background(), hello); err != nil {
		s.release(id, nil)
		s.log.Warn().Int("worker", id).Err(err).Msg("send Hello")
		return
	}
	s.mu.Lock()
	sl := &s.slots[id]
	sl.connecting = false
	if sl.gen != gen { // the token changed during the upgrade
		s.mu.Unlock()
		c.closeWith(websocket.StatusPolicyViolation, "token replaced", errors.New("token replaced"))
		return
	}
	sl.conn = c
	s.mu.Unlock()

	s.log.Info().Int("worker", id).Str("remote", r.RemoteAddr).Msg("worker connected")
	if s.opts.OnConnect != nil {
		s.opts.OnConnect(id, c)
	}
	go c.watch(s.opts.HeartbeatInterval)
	c.serve()

	s.release(id, c)
	err = c.link.err()
	ev := s.log.Info()
	if err != nil {
		ev = s.log.Warn().Err(err)
	}
	ev.Int("worker", id).Msg("worker disconnected")
	if s.opts.OnDisconnect != nil {
		s.opts.OnDisconnect(id, c, err)
	}
}

// admit checks the worker id and token of an upgrade request and reserves
// the worker's slot. On failure it has written the HTTP error.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (id int, gen uint64, ok bool) {
	log := s.log.With().Str("remote", r.RemoteAddr).Logger()
	raw := r.Header.Get("X-Worker-Id")
	id, err := strconv.Atoi(raw)
	if err != nil {
		log.Warn().Str("worker", raw).Msg("refused: invalid X-Worker-Id")
		http.Error(w, "invalid X-Worker-Id", http.StatusBadRequest)
		return 0, 0, false
	}
	if id < 0 || id >= len(s.slots) {
		log.Warn().Int("worker", id).Msg("refused: unknown worker id")
		http.Error(w, "unknown worker id", http.StatusNotFound)
		return 0, 0, false
	}
	token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(token))

	s.mu.Lock()
	defer s.mu.Unlock()
	sl := &s.slots[id]
	if !found || !sl.hasToken || subtle.ConstantTimeCompare(sum[:], sl.token[:]) != 1 {
		log.Warn().Int("worker", id).Msg("refused: bad token")
		http.Error(w, "bad token", http.StatusUnauthorized)
		return 0, 0, false
	}
	if sl.conn != nil || sl.connecting {
		log.Warn().Int("worker", id).Msg("refused: worker already connected")
		http.Error(w, "worker already connected", http.StatusConflict)
		return 0, 0, false
	}
	sl.connecting = true
	return id, sl.gen, true
}

// release frees the slot of id held by c (or by an upgrade when c is nil).
func (s *Server) release(id int, c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := &s.slots[id]
	if c == nil {
		sl.connecting = false
	} else if sl.conn == c {
		sl.conn = nil
	}
}
