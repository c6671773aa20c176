package auth

import (
	"context"
	"errors"
	"time"

	"github.com/boxproxy/boxproxy/seal"
)

// StoreSeal keys the encryption of stored tokens for one purpose ("fleet",
// "oauth-login"): BOXPROXY_STORE_KEY, or by default the client secret, so
// that nothing is ever stored in plaintext. With the default, rotating the
// client secret makes stored tokens unreadable: shared ccg/jwt tokens are
// fetched again, and a stored oauth login must log in again (set
// BOXPROXY_STORE_KEY to keep it across a rotation).
func StoreSeal(storeKey, clientSecret, purpose string) (*seal.Box, error) {
	key := storeKey
	if key == "" {
		if clientSecret == "" {
			return nil, errors.New("BOXPROXY_STORE_KEY is needed: there is no client secret to derive the key that encrypts stored tokens from")
		}
		key = "client-secret\x00" + clientSecret
	}
	return seal.New(key, purpose)
}

// The seams a fleet of replicas shares through (package fleet implements them
// on Redis). Without them a Cache and an OAuth source work alone, as one
// process always did.

// ErrFleet wraps every failure to reach what the fleet shares (Redis down or
// slow). Callers fall back to working alone where that is safe (ccg, jwt) and
// refuse where it is not (rotating an oauth refresh token).
var ErrFleet = errors.New("the fleet's shared store (Redis) is unreachable")

// ErrStale is returned by LoginStore.Save when the stored login changed since
// the version the caller read: its write would replace a newer login.
var ErrStale = errors.New("the shared login changed meanwhile")

// ErrLoginVersion is returned (wrapped) by LoginStore.Load when the stored
// version is not a number it can use (the key was edited by hand or by
// something else). Load then still returns the login, at version 0: the
// fenced write counts such a version as 0 too, so the next write repairs it.
var ErrLoginVersion = errors.New("the version field of the fleet's login in Redis is unusable (not a whole number)")

// SharedCache is a Cache's second level: tokens that every replica can use.
// Values are encrypted by the implementation; an entry that does not decrypt
// under this replica's key counts as missing.
type SharedCache interface {
	// Get returns s's token and when it was obtained; ok is false when there
	// is none.
	Get(ctx context.Context, s Subject) (tok Token, obtained time.Time, ok bool, err error)
	// Put stores tok unless the stored token expires later (a fenced write).
	Put(ctx context.Context, s Subject, tok Token, obtained time.Time) error
	// Delete drops s's token if it is still access (compare-and-delete).
	Delete(ctx context.Context, s Subject, access string) error
	// TryLock takes the fleet-wide lock on fetching s's token, without
	// waiting; held is false when another replica holds it. The lease is
	// renewed until unlock is called.
	TryLock(ctx context.Context, s Subject) (unlock func(), held bool, err error)
}

// LoginStore keeps the oauth login of a fleet: one value, versioned so that
// writes can be fenced, and a lock under which the refresh token is rotated.
type LoginStore interface {
	// Load returns the stored login (storeData's JSON; nil when logged out)
	// and its version. A version it cannot use is an error wrapping
	// ErrLoginVersion, returned with the login and version 0.
	Load(ctx context.Context) (data []byte, version int64, err error)
	// Save stores data if the version is still prev (prev < 0: whatever it
	// is) and returns the new version, or ErrStale.
	Save(ctx context.Context, data []byte, prev int64) (int64, error)
	// Lock takes the fleet-wide refresh lock, waiting until ctx ends. The
	// lease is renewed until unlock is called; a holder that dies loses it
	// when the lease runs out.
	Lock(ctx context.Context) (unlock func(), err error)
}

// FleetStatus reports whether the shared store can be reached.
type FleetStatus interface {
	// Degraded is empty while Redis answers, else a short reason.
	Degraded() string
}
