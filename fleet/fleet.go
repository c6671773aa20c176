// Package fleet lets replicas of one Box app share their tokens through Redis
// (BOXPROXY_REDIS_URL): a second level behind each replica's token cache, and
// the oauth login with its fleet-wide refresh lock. Every value it writes is
// sealed (package seal); read-check-write steps are Lua scripts, so they are
// atomic in Redis. While Redis does not answer, every call fails fast with
// auth.ErrFleet and the replica works alone until Redis is back.
package fleet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/boxproxy/boxproxy/auth"
	"github.com/boxproxy/boxproxy/metrics"
	"github.com/boxproxy/boxproxy/seal"
)

// Options configure a Fleet.
type Options struct {
	URL string // redis://, rediss://; ?addr=… for Cluster, ?master_name=… for Sentinel
	// Seal encrypts every value written to Redis (BOXPROXY_STORE_KEY).
	Seal *seal.Box
	// App names the Box app (method, token URL, client ID): replicas of one
	// app share keys; other apps on the same Redis do not see them.
	App string
	// Lease is how long a lock outlives a holder that died (default 3s); a
	// live holder renews it every third of it.
	Lease time.Duration
	// Timeout bounds one Redis call (default 500ms).
	Timeout time.Duration
	Metrics *metrics.Metrics
	Logger  zerolog.Logger
}

// Fleet is the connection to the fleet's Redis.
type Fleet struct {
	rdb     redis.UniversalClient
	sl      *seal.Box
	prefix  string
	lease   time.Duration
	timeout time.Duration
	m       *metrics.Metrics
	log     zerolog.Logger

	down   atomic.Bool
	reason atomic.Value // string
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// Open makes the client and starts watching Redis's health. It does not fail
// when Redis is down (the replica then works alone until it answers); it
// fails on a URL it cannot use. Its errors never show the URL's password.
func Open(o Options) (*Fleet, error) {
	if o.Seal == nil {
		return nil, errors.New("fleet: no key to encrypt what is stored in Redis")
	}
	if o.Lease <= 0 {
		o.Lease = 3 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 500 * time.Millisecond
	}
	rdb, err := newClient(o.URL, o.Timeout)
	if err != nil {
		return nil, err
	}
	logOnce.Do(func() {
		u, _ := url.Parse(o.URL)
		redis.SetLogger(redisLogger{log: o.Logger, u: u})
	})
	sum := sha256.Sum256([]byte("boxproxy fleet\x00" + o.App))
	f := &Fleet{
		rdb: rdb, sl: o.Seal, lease: o.Lease, timeout: o.Timeout, m: o.Metrics, log: o.Logger,
		// One hash tag: every key of an app is in one Cluster slot.
		prefix: "boxproxy:{" + hex.EncodeToString(sum[:6]) + "}:",
		stop:   make(chan struct{}),
	}
	f.reason.Store("")
	ctx, cancel := context.WithTimeout(context.Background(), 2*o.Timeout)
	err = rdb.Ping(ctx).Err()
	cancel()
	if err != nil {
		f.markDown("ping", err)
	} else {
		f.m.FleetUp(true)
		f.log.Info().Str("redis", redacted(o.URL)).Msg("fleet: sharing tokens through Redis")
	}
	f.wg.Add(1)
	go f.watch()
	return f, nil
}

// logOnce: go-redis has one logger per process.
var logOnce sync.Once

// redisLogger sends go-redis's own messages to the log at debug level,
// without the URL's password, instead of plain lines on stderr.
type redisLogger struct {
	log zerolog.Logger
	u   *url.URL
}

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug().Str("component", "go-redis").Msg(scrub(fmt.Sprintf(format, v...), l.u))
}

// newClient picks the client the URL asks for: Sentinel (master_name=),
// Cluster (addr= for more nodes) or one server.
func newClient(raw string, timeout time.Duration) (redis.UniversalClient, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		return nil, errors.New("BOXPROXY_REDIS_URL must be redis://[user:password@]host:port/db or rediss://… (TLS)")
	}
	q := u.Query()
	fail := func(err error) error {
		return fmt.Errorf("BOXPROXY_REDIS_URL %s: %v", redacted(raw), scrub(err.Error(), u))
	}
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(raw)
		if err != nil {
			return nil, fail(err)
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
		o.MaxRetries, o.ContextTimeoutEnabled = 1, true
		return redis.NewFailoverClient(o), nil
	case q.Has("addr"):
		o, err := redis.ParseClusterURL(raw)
		if err != nil {
			return nil, fail(err)
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
		o.MaxRetries, o.ContextTimeoutEnabled = 1, true
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fail(err)
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
		o.MaxRetries, o.ContextTimeoutEnabled = 1, true
		return redis.NewClient(o), nil
	}
}

// redacted shows a Redis URL without its passwords (the user's, and
// Sentinel's master password=… parameter).
func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	q := u.Query()
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}

// scrub removes the URL's passwords from a message.
func scrub(msg string, u *url.URL) string {
	if u == nil {
		return msg
	}
	if p, ok := u.User.Password(); ok && p != "" {
		msg = strings.ReplaceAll(msg, p, "xxxxx")
	}
	for k, vs := range u.Query() {
		if strings.Contains(strings.ToLower(k), "password") {
			for _, v := range vs {
				if v != "" {
					msg = strings.ReplaceAll(msg, v, "xxxxx")
				}
			}
		}
	}
	return msg
}

// Close stops the watcher and closes the connections.
func (f *Fleet) Close() error {
	f.once.Do(func() { close(f.stop) })
	f.wg.Wait()
	return f.rdb.Close()
}

// Degraded implements auth.FleetStatus.
func (f *Fleet) Degraded() string {
	if !f.down.Load() {
		return ""
	}
	return "redis unreachable (" + f.reason.Load().(string) + "): this replica serves from its own cache and fetches tokens alone; oauth refreshes wait for Redis"
}

// watch pings Redis: often while it is down, to resume sharing soon after it
// is back; now and then while it is up, to notice an outage between calls.
func (f *Fleet) watch() {
	defer f.wg.Done()
	for {
		every := 2 * time.Second
		if f.down.Load() {
			every = 250 * time.Millisecond
		}
		select {
		case <-f.stop:
			return
		case <-time.After(every):
		}
		ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
		err := f.rdb.Ping(ctx).Err()
		cancel()
		if err != nil {
			f.markDown("ping", err)
		} else if f.down.CompareAndSwap(true, false) {
			f.m.FleetUp(true)
			f.log.Info().Msg("fleet: Redis answers again; sharing tokens through it")
		}
	}
}

// markDown records a failure; calls then fail fast until a ping succeeds.
func (f *Fleet) markDown(op string, err error) {
	f.m.FleetError(op)
	f.reason.Store(op + ": " + errText(err))
	if f.down.CompareAndSwap(false, true) {
		f.m.FleetUp(false)
		f.log.Warn().Str("op", op).Str("error", errText(err)).
			Msg("fleet: Redis unreachable; serving from the local cache and fetching tokens alone until it answers")
	}
}

// errText is an error's text without anything from the URL (go-redis's errors
// name addresses, never passwords).
func errText(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

// call runs one Redis operation unless Redis is known to be down, and turns
// its failure into an auth.ErrFleet error.
func (f *Fleet) call(ctx context.Context, op string, do func(ctx context.Context) error) error {
	if f.down.Load() {
		return fmt.Errorf("%w (%s)", auth.ErrFleet, f.reason.Load().(string))
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	err := do(ctx)
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	if ctx.Err() != nil && !errors.Is(err, context.DeadlineExceeded) {
		// the caller gave up; Redis is not to blame
		return fmt.Errorf("%w: %s: %v", auth.ErrFleet, op, err)
	}
	f.markDown(op, err)
	return fmt.Errorf("%w: %s: %s", auth.ErrFleet, op, errText(err))
}

// Lua scripts: each reads, checks and writes one key atomically.
var (
	// putToken stores a token unless the stored one expires later.
	putToken = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'exp')
if cur and tonumber(cur) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'fp', ARGV[2], 'exp', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1`)
	// deleteToken drops a token only if it is still the rejected one.
	deleteToken = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'fp') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
	// unlock releases a lock only if the caller still owns it.
	unlock = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
	// renew extends a lock's lease only if the caller still owns it.
	renew = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)
	// saveLogin is the fenced write: it stores the login only if the version
	// is still the one the writer read (ARGV[2] < 0: any), and bumps it. A
	// version that is not a whole number of up to 15 digits (a hand edit)
	// counts as 0, as loginVersion reads it, so a write fenced at 0 repairs it.
	saveLogin = redis.NewScript(`
local raw = redis.call('HGET', KEYS[1], 'ver')
local cur = 0
if raw and string.len(raw) <= 15 and string.match(raw, '^%d+$') then cur = tonumber(raw) end
local prev = tonumber(ARGV[2])
if prev >= 0 and cur ~= prev then return -1 end
local nv = cur + 1
if ARGV[1] == '' then redis.call('HDEL', KEYS[1], 'v') else redis.call('HSET', KEYS[1], 'v', ARGV[1]) end
redis.call('HSET', KEYS[1], 'ver', nv)
return nv`)
)

// lock takes key's lock with a fresh owner token. With wait it polls until ctx
// ends; without, it tries once. A held lock's lease is renewed until unlock.
func (f *Fleet) lock(ctx context.Context, key string, wait bool) (func(), bool, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	owner := hex.EncodeToString(b[:])
	for {
		var ok bool
		err := f.call(ctx, "lock", func(ctx context.Context) error {
			var err error
			ok, err = f.rdb.SetNX(ctx, key, owner, f.lease).Result()
			return err
		})
		if err != nil && !wait {
			return nil, false, err
		}
		if ok {
			return f.holder(key, owner), true, nil
		}
		if !wait {
			return nil, false, nil
		}
		if err != nil {
			// Redis is away: wait for it as for a holder, until ctx ends.
			select {
			case <-ctx.Done():
				return nil, false, err
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: another replica held the lock for longer than this request could wait", auth.ErrFleet)
		case <-time.After(20*time.Millisecond + time.Duration(b[0])*100*time.Microsecond):
		}
	}
}

// holder renews the lease of a held lock until the returned unlock is called.
func (f *Fleet) holder(key, owner string) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(f.lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				var n int64
				err := f.call(context.Background(), "renew", func(ctx context.Context) error {
					var err error
					n, err = renew.Run(ctx, f.rdb, []string{key}, owner, f.lease.Milliseconds()).Int64()
					return err
				})
				if err == nil && n == 0 {
					f.log.Warn().Msg("fleet: a lock's lease ran out while it was held (Redis was slow or restarted); writes stay fenced")
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			_ = f.call(context.Background(), "unlock", func(ctx context.Context) error {
				return unlock.Run(ctx, f.rdb, []string{key}, owner).Err()
			})
		})
	}
}

// Cache returns the shared token cache.
func (f *Fleet) Cache() auth.SharedCache { return tokenCache{f} }

// Login returns the shared oauth login.
func (f *Fleet) Login() auth.LoginStore { return loginStore{f} }

type tokenCache struct{ f *Fleet }

// sealedToken is what a token key's "v" holds, sealed.
type sealedToken struct {
	Access   string `json:"a"`
	Expiry   int64  `json:"e"` // unix ms; 0: unknown
	Obtained int64  `json:"o"` // unix ms
}

func (c tokenCache) key(s auth.Subject) string {
	return c.f.prefix + "token:" + string(s.Type) + ":" + s.ID
}

func (c tokenCache) Get(ctx context.Context, s auth.Subject) (auth.Token, time.Time, bool, error) {
	key := c.key(s)
	var v string
	err := c.f.call(ctx, "get", func(ctx context.Context) error {
		var err error
		v, err = c.f.rdb.HGet(ctx, key, "v").Result()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return auth.Token{}, time.Time{}, false, nil
	}
	if err != nil {
		return auth.Token{}, time.Time{}, false, err
	}
	plain, err := c.f.sl.Open([]byte(v), []byte(key))
	var st sealedToken
	if err != nil || json.Unmarshal(plain, &st) != nil || st.Access == "" {
		// Sealed under another BOXPROXY_STORE_KEY (or damaged): never
		// sent to Box; this replica fetches its own.
		c.f.log.Debug().Str("subject", s.String()).Msg("fleet: a shared token does not decrypt with this replica's key; treated as missing")
		return auth.Token{}, time.Time{}, false, nil
	}
	var exp time.Time
	if st.Expiry > 0 {
		exp = time.UnixMilli(st.Expiry)
	}
	return auth.NewToken(st.Access, exp), time.UnixMilli(st.Obtained), true, nil
}

func (c tokenCache) Put(ctx context.Context, s auth.Subject, tok auth.Token, obtained time.Time) error {
	if tok.Expiry.IsZero() {
		return nil // a token without an expiry is not shared (it would never leave Redis)
	}
	key := c.key(s)
	plain, _ := json.Marshal(sealedToken{Access: tok.Access(), Expiry: tok.Expiry.UnixMilli(), Obtained: obtained.UnixMilli()})
	sealed := c.f.sl.Seal(plain, []byte(key))
	return c.f.call(ctx, "put", func(ctx context.Context) error {
		return putToken.Run(ctx, c.f.rdb, []string{key}, sealed, c.f.sl.Fingerprint(tok.Access()), tok.Expiry.UnixMilli()).Err()
	})
}

func (c tokenCache) Delete(ctx context.Context, s auth.Subject, access string) error {
	key := c.key(s)
	return c.f.call(ctx, "delete", func(ctx context.Context) error {
		return deleteToken.Run(ctx, c.f.rdb, []string{key}, c.f.sl.Fingerprint(access)).Err()
	})
}

func (c tokenCache) TryLock(ctx context.Context, s auth.Subject) (func(), bool, error) {
	return c.f.lock(ctx, c.f.prefix+"lock:token:"+string(s.Type)+":"+s.ID, false)
}

type loginStore struct{ f *Fleet }

func (l loginStore) key() string { return l.f.prefix + "login" }

func (l loginStore) Load(ctx context.Context) ([]byte, int64, error) {
	key := l.key()
	var vals []any
	err := l.f.call(ctx, "load_login", func(ctx context.Context) error {
		var err error
		vals, err = l.f.rdb.HMGet(ctx, key, "v", "ver").Result()
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	ver, verr := loginVersion(vals[1])
	s, ok := vals[0].(string)
	if !ok || s == "" {
		return nil, ver, verr
	}
	plain, err := l.f.sl.Open([]byte(s), []byte(key))
	if err != nil {
		return nil, ver, auth.ErrStoreKey
	}
	return plain, ver, verr
}

// loginVersion reads the login's "ver" field as saveLogin does: missing is 0;
// anything but a whole number of up to 15 digits is an error wrapping
// auth.ErrLoginVersion, and counts as 0. The error does not quote the field.
func loginVersion(v any) (int64, error) {
	s, ok := v.(string)
	if !ok {
		return 0, nil
	}
	if len(s) == 0 || len(s) > 15 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%w: counted as 0, so the next write replaces it", auth.ErrLoginVersion)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: counted as 0, so the next write replaces it", auth.ErrLoginVersion)
	}
	return n, nil
}

func (l loginStore) Save(ctx context.Context, data []byte, prev int64) (int64, error) {
	key := l.key()
	var sealed []byte
	if data != nil {
		sealed = l.f.sl.Seal(data, []byte(key))
	}
	var nv int64
	err := l.f.call(ctx, "save_login", func(ctx context.Context) error {
		var err error
		nv, err = saveLogin.Run(ctx, l.f.rdb, []string{key}, sealed, prev).Int64()
		return err
	})
	if err != nil {
		return 0, err
	}
	if nv < 0 {
		return 0, auth.ErrStale
	}
	return nv, nil
}

func (l loginStore) Lock(ctx context.Context) (func(), error) {
	unlock, _, err := l.f.lock(ctx, l.f.prefix+"lock:login", true)
	return unlock, err
}
