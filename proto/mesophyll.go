package proto

import "encoding/json"

// Message is one Mesophyll frame: a JSON text frame holding exactly one
// externally tagged message, e.g.
//
//	{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{...},"req_id":7}}
//
// Server (master) to worker: Hello, DispatchEvent, RunScript, DropTenant,
// DropAll, Shutdown and StoreResponse. Worker to server: DispatchResponse, Ack,
// Heartbeat and the store requests TemplatesFor, TenantsFor, KvGet, KvSet,
// KvDelete, KvFind, ScheduleEvent, CancelEvent and ScheduledEvents. The README's protocol section shows each one.
type Message struct {
	Hello            *Hello            `json:"Hello,omitempty"`
	DispatchEvent    *DispatchEvent    `json:"DispatchEvent,omitempty"`
	RunScript        *RunScript        `json:"RunScript,omitempty"`
	DropTenant       *DropTenant       `json:"DropTenant,omitempty"`
	DropAll          *DropAll          `json:"DropAll,omitempty"`
	Shutdown         *Shutdown         `json:"Shutdown,omitempty"`
	StoreResponse    *StoreResponse    `json:"StoreResponse,omitempty"`
	DispatchResponse *DispatchResponse `json:"DispatchResponse,omitempty"`
	Ack              *Ack              `json:"Ack,omitempty"`
	Heartbeat        *Heartbeat        `json:"Heartbeat,omitempty"`
	TemplatesFor     *TemplatesFor     `json:"TemplatesFor,omitempty"`
	TenantsFor       *TenantsFor       `json:"TenantsFor,omitempty"`
	KvGet            *KvGet            `json:"KvGet,omitempty"`
	KvSet            *KvSet            `json:"KvSet,omitempty"`
	KvDelete         *KvDelete         `json:"KvDelete,omitempty"`
	KvFind           *KvFind           `json:"KvFind,omitempty"`
	// Batch carries several messages in one frame, in order; either side
	// may send it once the other has announced its frame limit (Hello's
	// max_frame, the upgrade's X-Mesophyll-Max-Frame header). It holds at
	// least one message, none of them a Batch.
	//
	//	{"Batch":[{"DispatchResponse":{"req_id":7,"result":1}},{"Ack":{"seq":3}}]}
	Batch []Message `json:"Batch,omitempty"`
	// ScheduleEvent, CancelEvent and ScheduledEvents are the store
	// requests of ctx.events (worker to master).
	ScheduleEvent   *ScheduleEvent   `json:"ScheduleEvent,omitempty"`
	CancelEvent     *CancelEvent     `json:"CancelEvent,omitempty"`
	ScheduledEvents *ScheduledEvents `json:"ScheduledEvents,omitempty"`
}

// Hello is the first frame the master sends on a new connection.
//
//	{"Hello":{"heartbeat_interval_ms":1000,"max_frame":4194304}}
type Hello struct {
	HeartbeatIntervalMS int64 `json:"heartbeat_interval_ms"`
	// MaxFrame is the largest frame the master accepts, in bytes; a
	// worker may send Batch frames up to this size. Absent: no Batch.
	MaxFrame int64 `json:"max_frame,omitempty"`
}

// DispatchEvent asks the worker to dispatch an event. With ReqID the worker
// answers with a DispatchResponse; without it the call is nowait and the
// worker answers with an Ack of Seq once the event has run.
//
//	{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"Ping","author":null,"data":{}},"req_id":7}}
//	{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"Ping","author":null,"data":{}},"seq":3}}
//
// A pipelined (windowed) delivery of the master's durable queue sends
// several nowait events of one tenant back to back, each with the same
// Window (an id the master does not reuse on this connection) and Last on
// the window's final one:
//
//	{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"Ping","author":null,"data":{},"id":"41"},"seq":5,"window":2}}
//	{"DispatchEvent":{"id":{"type":"Guild","id":"1"},"event":{"name":"Ping","author":null,"data":{},"id":"42"},"seq":6,"window":2,"last":true}}
//
// The worker runs them in order; once one ends with an error that
// StopsWindow, the window's later events are not run and are acknowledged
// with code not_run ({"Ack":{"seq":6,"code":"not_run"}}). A frame of a new
// window of the tenant (or the Last one) ends the worker's record of the
// previous window.
type DispatchEvent struct {
	ID     Id     `json:"id"`
	Event  Event  `json:"event"`
	ReqID  uint64 `json:"req_id,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	Window uint64 `json:"window,omitempty"`
	Last   bool   `json:"last,omitempty"`
}

// RunScript asks the worker to run ad-hoc code in a tenant's VM.
//
//	{"RunScript":{"id":{"type":"Guild","id":"1"},"name":"adhoc","code":"return 1","event":{...},"req_id":8}}
type RunScript struct {
	ID    Id     `json:"id"`
	Name  string `json:"name"`
	Code  string `json:"code"`
	Event Event  `json:"event"`
	ReqID uint64 `json:"req_id"`
}

// DropTenant asks the worker to discard a tenant's VM and cached templates.
//
//	{"DropTenant":{"id":{"type":"Guild","id":"1"},"req_id":9}}
type DropTenant struct {
	ID    Id     `json:"id"`
	ReqID uint64 `json:"req_id"`
}

// DropAll asks the worker to discard every tenant's VM and cached
// templates (after a gap in the cluster's template notifications, when the
// master cannot know which tenants changed).
//
//	{"DropAll":{"req_id":10}}
type DropAll struct {
	ReqID uint64 `json:"req_id"`
}

// Shutdown asks the worker to finish what it is running and exit 0.
//
//	{"Shutdown":{}}
type Shutdown struct{}

// DispatchResponse answers DispatchEvent, RunScript, DropTenant and DropAll: either a
// result or an error.
//
//	{"DispatchResponse":{"req_id":7,"result":{"greet":"hi"}}}
//	{"DispatchResponse":{"req_id":7,"error":{"code":"script_error","message":"..."}}}
type DispatchResponse struct {
	ReqID  uint64 `json:"req_id"`
	Result Value  `json:"result,omitempty"`
	Error  *Error `json:"error,omitempty"`
}

// Ack tells the master that the nowait event with this Seq has run. If it
// failed, Code is the error's code (nowait errors are logged by the worker,
// not redelivered; a limit code counts against the tenant's quarantine).
//
//	{"Ack":{"seq":3}}
//	{"Ack":{"seq":4,"code":"cpu_limit","message":"cpu limit: more than 1000000 instructions"}}
//	{"Ack":{"seq":5,"code":"not_run"}}
//
// not_run answers an event of a window (DispatchEvent.Window) that the
// worker did not run because an earlier event of the window failed.
type Ack struct {
	Seq  uint64 `json:"seq"`
	Code string `json:"code,omitempty"`
	// Message is the failure's message (with Code, not for not_run), as a
	// DispatchResponse's error would carry it: the queue keeps it as the
	// event's last error.
	Message string `json:"message,omitempty"`
}

// Heartbeat is sent by the worker every heartbeat interval, with its figures.
//
//	{"Heartbeat":{"tenants":3,"cache":{"vms":3,"cold_starts":5,"evictions_lru":2,"evictions_idle":0,"evictions_memory":0},"heap_bytes":4194304,"rss_bytes":16777216}}
type Heartbeat struct {
	// Tenants is the number of tenant VMs loaded.
	Tenants int `json:"tenants"`
	// Cache is what the worker's tenant cache did (absent from workers
	// that do not report it).
	Cache *CacheStats `json:"cache,omitempty"`
	// HeapBytes and RSSBytes are the worker process's live Go heap and
	// resident set size.
	HeapBytes int64 `json:"heap_bytes,omitempty"`
	RSSBytes  int64 `json:"rss_bytes,omitempty"`
}

// CacheStats are the counters of a worker's tenant-VM cache.
type CacheStats struct {
	// VMs is the number of tenant VMs built now.
	VMs int64 `json:"vms"`
	// ColdStarts counts VMs built: first events, and events after an
	// eviction, a drop or an aborted call.
	ColdStarts int64 `json:"cold_starts"`
	// EvictionsLRU counts tenants evicted because the cache was full,
	// EvictionsIdle those evicted after --vm-idle-ttl unused,
	// EvictionsMemory those evicted because the worker's heap passed the
	// high watermark of --worker-memory-max.
	EvictionsLRU    int64 `json:"evictions_lru"`
	EvictionsIdle   int64 `json:"evictions_idle"`
	EvictionsMemory int64 `json:"evictions_memory"`
}

// TemplatesFor asks the master for a tenant's templates.
//
//	{"TemplatesFor":{"req_id":1,"id":{"type":"Guild","id":"1"}}}
//
// Result: an array of Template.
type TemplatesFor struct {
	ReqID uint64 `json:"req_id"`
	ID    Id     `json:"id"`
}

// TenantsFor asks the master for the tenants owned by this worker that
// subscribe to an event (used for OnStartup).
//
//	{"TenantsFor":{"req_id":2,"event":"OnStartup"}}
//
// Result: an array of Id.
type TenantsFor struct {
	ReqID uint64 `json:"req_id"`
	Event string `json:"event"`
}

// KvGet reads one key. Result: {"found":true,"value":<json>}.
//
//	{"KvGet":{"req_id":3,"id":{"type":"Guild","id":"1"},"key":"count"}}
type KvGet struct {
	ReqID uint64 `json:"req_id"`
	ID    Id     `json:"id"`
	Key   string `json:"key"`
}

// KvGetResult is the result of KvGet.
type KvGetResult struct {
	Found bool            `json:"found"`
	Value json.RawMessage `json:"value,omitempty"`
}

// KvSet writes one key. Result: null.
//
//	{"KvSet":{"req_id":4,"id":{"type":"Guild","id":"1"},"key":"count","value":3}}
type KvSet struct {
	ReqID uint64          `json:"req_id"`
	ID    Id              `json:"id"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// KvDelete removes one key. Result: null.
//
//	{"KvDelete":{"req_id":5,"id":{"type":"Guild","id":"1"},"key":"count"}}
type KvDelete struct {
	ReqID uint64 `json:"req_id"`
	ID    Id     `json:"id"`
	Key   string `json:"key"`
}

// KvFind lists keys with a prefix, ordered by key. Result: an array of KVItem.
//
//	{"KvFind":{"req_id":6,"id":{"type":"Guild","id":"1"},"prefix":"user:"}}
type KvFind struct {
	ReqID  uint64 `json:"req_id"`
	ID     Id     `json:"id"`
	Prefix string `json:"prefix"`
}

// StoreResponse answers a store request.
//
//	{"StoreResponse":{"req_id":3,"result":{"found":true,"value":3}}}
//	{"StoreResponse":{"req_id":4,"error":{"code":"store_unavailable","message":"..."}}}
type StoreResponse struct {
	ReqID  uint64 `json:"req_id"`
	Result Value  `json:"result,omitempty"`
	Error  *Error `json:"error,omitempty"`
}
