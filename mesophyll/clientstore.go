package mesophyll

import (
	"context"
	"encoding/json"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// Templates asks the master for a tenant's templates.
func (c *Client) Templates(ctx context.Context, tenant proto.Id) ([]proto.Template, error) {
	req := c.link.reqID()
	var out []proto.Template
	err := c.storeCall(ctx, req, &proto.Message{TemplatesFor: &proto.TemplatesFor{ReqID: req, ID: tenant}}, &out)
	return out, err
}

// TenantsFor asks the master for the tenants owned by this worker that
// subscribe to event.
func (c *Client) TenantsFor(ctx context.Context, event string) ([]proto.Id, error) {
	req := c.link.reqID()
	var out []proto.Id
	err := c.storeCall(ctx, req, &proto.Message{TenantsFor: &proto.TenantsFor{ReqID: req, Event: event}}, &out)
	return out, err
}

// TenantsWithEvent is TenantsFor under the name the worker's store
// interface uses. The master only lists this worker's tenants.
func (c *Client) TenantsWithEvent(ctx context.Context, event string) ([]proto.Id, error) {
	return c.TenantsFor(ctx, event)
}

// KvGet returns the value of key and whether it exists.
func (c *Client) KvGet(ctx context.Context, tenant proto.Id, key string) (json.RawMessage, bool, error) {
	req := c.link.reqID()
	var out proto.KvGetResult
	err := c.storeCall(ctx, req, &proto.Message{KvGet: &proto.KvGet{ReqID: req, ID: tenant, Key: key}}, &out)
	if err != nil || !out.Found {
		return nil, false, err
	}
	return out.Value, true, nil
}

// KvSet creates or replaces key.
func (c *Client) KvSet(ctx context.Context, tenant proto.Id, key string, value json.RawMessage) error {
	req := c.link.reqID()
	return c.storeCall(ctx, req, &proto.Message{KvSet: &proto.KvSet{ReqID: req, ID: tenant, Key: key, Value: value}}, nil)
}

// KvDelete removes key.
func (c *Client) KvDelete(ctx context.Context, tenant proto.Id, key string) error {
	req := c.link.reqID()
	return c.storeCall(ctx, req, &proto.Message{KvDelete: &proto.KvDelete{ReqID: req, ID: tenant, Key: key}}, nil)
}

// KvFind lists the keys starting with prefix, ordered by key.
func (c *Client) KvFind(ctx context.Context, tenant proto.Id, prefix string) ([]proto.KVItem, error) {
	req := c.link.reqID()
	var out []proto.KVItem
	err := c.storeCall(ctx, req, &proto.Message{KvFind: &proto.KvFind{ReqID: req, ID: tenant, Prefix: prefix}}, &out)
	return out, err
}

// storeCall sends store request m, which carries req, waits for its
// StoreResponse and decodes the result into out (unless out is nil).
func (c *Client) storeCall(ctx context.Context, req uint64, m *proto.Message, out any) error {
	b, err := marshal(m)
	if err != nil {
		return proto.Errorf(proto.CodeInvalidKV, "encode store request: %v", err)
	}
	var res proto.Value
	if r, ok := ctx.Value(inlineRunKey{}).(*inlineRun); ok && r.c == c {
		res, err = c.pumpCall(ctx, req, b, r.turn)
	} else {
		res, err = c.link.call(ctx, req, b)
	}
	if err != nil {
		return err
	}
	if out == nil || res.IsNull() {
		return nil
	}
	if err := json.Unmarshal(res, out); err != nil {
		return proto.Errorf(proto.CodeStoreUnavailable, "decode store response: %v", err)
	}
	return nil
}

// pumpCall is the store call of an event run inline by the reader turn:
// no other goroutine reads the connection meanwhile, so it sends frame and
// reads and handles frames itself until the response of req has arrived.
// Requests read meanwhile are served the usual way, on goroutines of
// their own. Its wait is bounded by the master, which answers every store
// request within its store timeout, and by the connection's end; ctx is
// checked between frames only, since a WebSocket read cut short would end
// the connection. If the reading was handed off (readturn.go), or comes
// due for a hand-off while it reads, it waits like any other call.
func (c *Client) pumpCall(ctx context.Context, req uint64, frame []byte, turn *readerTurn) (proto.Value, error) {
	if !c.pumpTurn(turn) {
		return c.link.call(ctx, req, frame)
	}
	ch, err := c.link.register(req)
	if err != nil {
		c.pumpDone(false)
		return nil, err
	}
	c.flushOut() // answers collected so far do not wait for the store
	if err := c.link.send(ctx, frame); err != nil {
		c.pumpDone(false)
		c.link.forget(req)
		return nil, err
	}
	for {
		select {
		case r := <-ch:
			c.pumpDone(false)
			return received(ch, r)
		default:
		}
		if c.handoffDue() {
			c.pumpDone(true) // a new reader answers ch
			return awaitResponse(ctx, c, req, ch)
		}
		err := c.link.readFrame(&c.pumpBuf, &c.pumpMsg)
		if err == nil {
			err = eachMessage(&c.pumpMsg, func(m *proto.Message) error { return c.handle(c.hctx, c.handler, m, turn) })
		}
		if err != nil {
			c.pumpDone(false)
			c.readFailed(err)
			return received(ch, <-ch) // the end of the link answered every call
		}
		if ctx.Err() != nil {
			c.pumpDone(false)
			c.link.forget(req)
			return nil, proto.Errorf(proto.CodeTimeout, "master did not answer in time: %v", ctx.Err())
		}
	}
}

// ScheduleEvent asks the master to store ev for tenant, due at at, and
// returns its id.
func (c *Client) ScheduleEvent(ctx context.Context, tenant proto.Id, at time.Time, ev proto.Event) (string, error) {
	req := c.link.reqID()
	var out string
	err := c.storeCall(ctx, req, &proto.Message{ScheduleEvent: &proto.ScheduleEvent{ReqID: req, ID: tenant, At: at, Event: ev}}, &out)
	return out, err
}

// CancelEvent asks the master to cancel the tenant's pending scheduled
// event id; false when there is none.
func (c *Client) CancelEvent(ctx context.Context, tenant proto.Id, id string) (bool, error) {
	req := c.link.reqID()
	var out bool
	err := c.storeCall(ctx, req, &proto.Message{CancelEvent: &proto.CancelEvent{ReqID: req, ID: tenant, EventID: id}}, &out)
	return out, err
}

// ScheduledEvents lists the tenant's pending scheduled events in delivery
// order.
func (c *Client) ScheduledEvents(ctx context.Context, tenant proto.Id) ([]proto.ScheduledEvent, error) {
	req := c.link.reqID()
	var out []proto.ScheduledEvent
	err := c.storeCall(ctx, req, &proto.Message{ScheduledEvents: &proto.ScheduledEvents{ReqID: req, ID: tenant}}, &out)
	return out, err
}
