package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// Event is a queued or dead-lettered event as the API lists it.
type Event = proto.QueuedEvent

// Accepted is the answer to a nowait or delayed event: its id and, for a
// delayed one, when it is due.
type Accepted struct {
	Accepted  bool      `json:"accepted"`
	ID        string    `json:"id"`
	DeliverAt time.Time `json:"deliver_at,omitzero"`
}

// DispatchAt commits an event due at deliverAt (POST …/events?wait=false
// with "deliver_at") and returns its id.
func (c *Client) DispatchAt(ctx context.Context, id proto.Id, ev proto.Event, deliverAt time.Time) (Accepted, error) {
	body := struct {
		proto.Event
		DeliverAt string `json:"deliver_at"`
	}{ev, deliverAt.UTC().Format(time.RFC3339Nano)}
	var out Accepted
	err := c.do(ctx, http.MethodPost, tenantPath(id)+"/events?wait=false", body, &out)
	return out, err
}

// DispatchDelayed commits an event due delay from now by the master's
// clock (POST …/events?wait=false&delay=) and returns its id.
func (c *Client) DispatchDelayed(ctx context.Context, id proto.Id, ev proto.Event, delay time.Duration) (Accepted, error) {
	var out Accepted
	err := c.do(ctx, http.MethodPost, tenantPath(id)+"/events?wait=false&delay="+url.QueryEscape(delay.String()), ev, &out)
	return out, err
}

// PendingEvents lists a tenant's pending events (immediate, delayed and
// scheduled; only the scheduled ones with scheduledOnly) in delivery order.
func (c *Client) PendingEvents(ctx context.Context, id proto.Id, scheduledOnly bool) ([]Event, error) {
	q := url.Values{"tenant": {id.String()}}
	if scheduledOnly {
		q.Set("scheduled", "true")
	}
	var out struct {
		Pending []Event `json:"pending"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/events/pending?"+q.Encode(), nil, &out)
	return out.Pending, err
}

// DeadLetters lists a page of dead letters, oldest first: up to limit (0:
// the master's default of 1,000), of tenant when it is not nil, from the
// first after the dead letter after ("": from the first). The master also
// ends a page at 16 MiB of events; more reports that others follow (list
// them with after set to the last one's ID).
func (c *Client) DeadLetters(ctx context.Context, tenant *proto.Id, after string, limit int) (list []Event, more bool, err error) {
	q := url.Values{}
	if tenant != nil {
		q.Set("tenant", tenant.String())
	}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/v1/dead-letters"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		DeadLetters []Event `json:"dead_letters"`
		More        bool    `json:"more"`
	}
	err = c.do(ctx, http.MethodGet, path, nil, &out)
	return out.DeadLetters, out.More, err
}

// RetryDeadLetter puts dead letter id back into its tenant's queue with its
// attempts reset, and returns it.
func (c *Client) RetryDeadLetter(ctx context.Context, id string) (Event, error) {
	var out struct {
		Requeued Event `json:"requeued"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/dead-letters/"+url.PathEscape(id)+"/retry", nil, &out)
	return out.Requeued, err
}

// DeleteDeadLetter deletes dead letter id.
func (c *Client) DeleteDeadLetter(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/dead-letters/"+url.PathEscape(id), nil, nil)
}

// CancelEvent deletes the tenant's pending event id before it runs
// (DELETE /v1/tenants/{kind}/{id}/events/{event}); an event that is not
// pending (delivered, sent to its worker, or never accepted) is a
// not_found error.
func (c *Client) CancelEvent(ctx context.Context, id proto.Id, eventID string) error {
	return c.do(ctx, http.MethodDelete, tenantPath(id)+"/events/"+url.PathEscape(eventID), nil, nil)
}
