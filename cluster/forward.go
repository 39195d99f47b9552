package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/templateworker/templateworker/proto"
)

// Headers of forwarded calls.
const (
	// ForwardedHeader, on a request, names the master that forwarded it;
	// a master never forwards such a request again.
	ForwardedHeader = "X-Templateworker-Forwarded-By"
	// OwnerHeader, on a forwarded call's answer, names the master that
	// served it.
	OwnerHeader = "X-Templateworker-Owner"
)

// Forwarder sends API calls to the master that owns their tenant and
// copies the answer back.
type Forwarder struct {
	from    string
	timeout time.Duration
	client  *http.Client
}

// NewForwarder returns a Forwarder for the master named from; timeout
// bounds every forwarded call (the caller's own deadline also applies).
func NewForwarder(from string, timeout time.Duration) *Forwarder {
	tr := &http.Transport{
		Proxy:               nil, // masters talk directly
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Forwarder{from: from, timeout: timeout, client: &http.Client{Transport: tr}}
}

// Forward sends r (method, path, query, body, Authorization) to owner and
// writes its answer to w. It returns a *proto.Error (shard_unavailable)
// without writing anything when the owner cannot be reached or does not
// answer in time.
func (f *Forwarder) Forward(w http.ResponseWriter, r *http.Request, shard int, owner Member) error {
	if by := r.Header.Get(ForwardedHeader); by != "" {
		return proto.Errorf(proto.CodeShardUnavailable, "shard %d: %s forwarded this call to %s, which does not own it either (it thinks %s does): the masters disagree on shard ranges",
			shard, by, f.from, owner.Name)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return proto.Errorf(proto.CodeTooLarge, "request body is larger than %d bytes", tooBig.Limit)
		}
		return proto.Errorf(proto.CodeBadRequest, "read request body: %v", err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, strings.TrimRight(owner.URL, "/")+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return proto.Errorf(proto.CodeShardUnavailable, "shard %d (owner %s): bad owner URL %q: %v", shard, owner.Name, owner.URL, err)
	}
	for _, h := range []string{"Authorization", "Content-Type", "Accept"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(ForwardedHeader, f.from)
	resp, err := f.client.Do(req)
	if err != nil {
		return proto.Errorf(proto.CodeShardUnavailable, "shard %d (owner %s at %s) is unreachable: %v", shard, owner.Name, owner.URL, cause(err))
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Content-Length", "Retry-After"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.Header().Set(OwnerHeader, owner.Name)
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	return nil
}

// cause strips the *url.Error wrapper (method and URL are in the message
// already).
func cause(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("no answer before the call's deadline")
	}
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}
