package fleet_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/internal/redistest"
)

func loginKey(t *testing.T, r *redistest.Server) string {
	t.Helper()
	for _, k := range r.Client().Keys(context.Background(), "*").Val() {
		if strings.HasSuffix(k, "}:login") {
			return k
		}
	}
	t.Fatal("no login key in Redis")
	return ""
}

// Load says when the version field is unusable (without quoting it) and
// returns the login at version 0; a write fenced at 0 repairs the field.
func TestLoginLoadReportsAnUnusableVersionAndTheNextWriteRepairsIt(t *testing.T) {
	r := redistest.Start(t)
	ctx := context.Background()
	l := open(t, r.URL(), storeKey, 0).Login()
	if _, err := l.Save(ctx, []byte(`{"version":1}`), 0); err != nil {
		t.Fatal(err)
	}
	key := loginKey(t, r)
	for _, bad := range []string{"abc", "0x10", "1.5", "-3", "", "1e3", "12345678901234567890"} {
		r.Client().HSet(ctx, key, "ver", bad)
		data, v, err := l.Load(ctx)
		if !errors.Is(err, auth.ErrLoginVersion) || v != 0 || string(data) != `{"version":1}` {
			t.Errorf("ver %q: Load = %q, %d, %v; want the login at 0 and ErrLoginVersion", bad, data, v, err)
		}
		if err != nil && bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("ver %q: the error quotes the field: %v", bad, err)
		}
		nv, err := l.Save(ctx, []byte(`{"version":1}`), 0)
		if err != nil || nv != 1 {
			t.Errorf("ver %q: a write fenced at 0: %d, %v; want version 1", bad, nv, err)
		}
		if _, v, err := l.Load(ctx); err != nil || v != 1 {
			t.Errorf("ver %q: after the repair Load = %d, %v", bad, v, err)
		}
	}
}
