// Package accesslog carries what the access log keeps of one request through
// the request's context: the server puts an Entry there and logs it when the
// request ends; the proxy and the error writer fill it in on the way.
package accesslog

import "context"

// Entry is what the access log and the metrics keep of one request, beyond
// what the server sees itself (method, path, status, bytes, duration).
type Entry struct {
	Route        string // api, upload, auth, healthz, …
	Subject      string // enterprise:ID or user:ID, for proxied requests
	Attempts     int    // requests sent to Box
	BoxRequestID string // Box's request ID, when Box sent one
	Code         string // the error code of an answer boxproxy made itself
}

type key struct{}

// With returns ctx carrying e.
func With(ctx context.Context, e *Entry) context.Context { return context.WithValue(ctx, key{}, e) }

// From returns the Entry ctx carries, or a throwaway one, so that callers
// need not check.
func From(ctx context.Context) *Entry {
	if e, ok := ctx.Value(key{}).(*Entry); ok {
		return e
	}
	return &Entry{}
}
