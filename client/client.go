// Package client is a Go client of the master's HTTP API, used by the CLI
// and by tests and tools that drive a running master.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/templateworker/templateworker/proto"
)

// Client talks to one master.
type Client struct {
	addr  string
	token string
	http  *http.Client
}

// New returns a client of the master at addr (e.g. http://127.0.0.1:7878)
// authenticating with token.
func New(addr, token string) *Client {
	addr = strings.TrimRight(addr, "/")
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{addr: addr, token: token, http: &http.Client{}}
}

// do sends a request and decodes a 2xx JSON answer into out (if non-nil).
// An error answer is returned as *proto.Error.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.addr+path, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error *proto.Error `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != nil {
			return e.Error
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return nil
}

func tenantPath(id proto.Id) string { return "/v1/tenants/" + id.Path() }

// PutTemplate creates or replaces a template.
func (c *Client) PutTemplate(ctx context.Context, id proto.Id, name, code string, events []string) error {
	if events == nil {
		events = []string{}
	}
	return c.do(ctx, http.MethodPut, tenantPath(id)+"/templates/"+url.PathEscape(name),
		map[string]any{"code": code, "events": events}, nil)
}

// Templates lists a tenant's templates.
func (c *Client) Templates(ctx context.Context, id proto.Id) ([]proto.Template, error) {
	var out struct {
		Templates []proto.Template `json:"templates"`
	}
	err := c.do(ctx, http.MethodGet, tenantPath(id)+"/templates", nil, &out)
	return out.Templates, err
}

// DeleteTemplate removes a template.
func (c *Client) DeleteTemplate(ctx context.Context, id proto.Id, name string) error {
	return c.do(ctx, http.MethodDelete, tenantPath(id)+"/templates/"+url.PathEscape(name), nil, nil)
}

// Dispatch sends an event and waits for the results.
func (c *Client) Dispatch(ctx context.Context, id proto.Id, ev proto.Event) (proto.Value, error) {
	var out struct {
		Result proto.Value `json:"result"`
	}
	err := c.do(ctx, http.MethodPost, tenantPath(id)+"/events", ev, &out)
	return out.Result, err
}

// DispatchNoWait queues an event without waiting for it to run.
func (c *Client) DispatchNoWait(ctx context.Context, id proto.Id, ev proto.Event) error {
	_, err := c.DispatchNoWaitID(ctx, id, ev)
	return err
}

// DispatchNoWaitID is DispatchNoWait returning the id the master's
// durable queue gave the event (its event.id), committed when it returns.
func (c *Client) DispatchNoWaitID(ctx context.Context, id proto.Id, ev proto.Event) (string, error) {
	var out struct {
		ID string `json:"id"`
	}
	err := c.do(ctx, http.MethodPost, tenantPath(id)+"/events?wait=false", ev, &out)
	return out.ID, err
}

// RunScript runs ad-hoc code in a tenant's VM.
func (c *Client) RunScript(ctx context.Context, id proto.Id, name, code string, ev *proto.Event) (proto.Value, error) {
	var out struct {
		Result proto.Value `json:"result"`
	}
	body := map[string]any{"name": name, "code": code}
	if ev != nil {
		body["event"] = ev
	}
	err := c.do(ctx, http.MethodPost, tenantPath(id)+"/scripts", body, &out)
	return out.Result, err
}

// DropTenant discards a tenant's VM.
func (c *Client) DropTenant(ctx context.Context, id proto.Id) error {
	return c.do(ctx, http.MethodDelete, tenantPath(id)+"/vm", nil, nil)
}

// KV lists a tenant's keys with a prefix.
func (c *Client) KV(ctx context.Context, id proto.Id, prefix string) ([]proto.KVItem, error) {
	var out struct {
		Items []proto.KVItem `json:"items"`
	}
	err := c.do(ctx, http.MethodGet, tenantPath(id)+"/kv?prefix="+url.QueryEscape(prefix), nil, &out)
	return out.Items, err
}

// Workers returns the raw /v1/workers answer.
func (c *Client) Workers(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.do(ctx, http.MethodGet, "/v1/workers", nil, &out)
	return out, err
}

// Quarantined returns the raw /v1/quarantine answer.
func (c *Client) Quarantined(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.do(ctx, http.MethodGet, "/v1/quarantine", nil, &out)
	return out, err
}

// LiftQuarantine ends a tenant's quarantine.
func (c *Client) LiftQuarantine(ctx context.Context, id proto.Id) error {
	return c.do(ctx, http.MethodDelete, tenantPath(id)+"/quarantine", nil, nil)
}

// RestartWorkers replaces the worker processes one at a time and returns
// when all are ready again.
func (c *Client) RestartWorkers(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/workers/restart", nil, nil)
}
