// Package redistest starts a real redis-server (Debian's package) for tests, on
// a free loopback port, and stops it when the test ends. A machine without
// redis-server fails the test with one line saying how to install it.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process.
type Server struct {
	Addr string
	args []string // extra redis-server arguments
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	t    testing.TB
}

// Start runs redis-server on a free loopback port, without persistence.
func Start(t testing.TB) *Server { t.Helper(); return start(t) }

func start(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found: install it (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis)")
	}
	s := &Server{dir: t.TempDir(), t: t, args: args}
	for attempt := 0; ; attempt++ {
		s.Addr = freeAddr(t)
		if err := s.start(); err == nil {
			break
		} else if attempt == 4 {
			t.Fatalf("redis-server did not start: %v", err)
		}
	}
	t.Cleanup(s.Stop)
	return s
}

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"), "--daemonize", "no")
	cmd.Args = append(cmd.Args, s.args...)
	// Killed with the test process, even when that dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("redis-server exited: %s", lastLine(string(log)))
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond); err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Kill()
	return fmt.Errorf("redis-server did not listen on %s within 10s", s.Addr)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Kill ends the server at once (SIGKILL); its data is lost.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a frozen process dies only once it runs
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port (empty: no persistence).
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	for range 50 { // the port may take a moment to be free again
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redis-server did not restart on %s: %v", s.Addr, err)
}

// Freeze stops the server without closing anything (SIGSTOP): connections
// stay open and calls hang, as with an overloaded or partitioned Redis.
func (s *Server) Freeze() {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

// Thaw lets a frozen server go on (SIGCONT).
func (s *Server) Thaw() {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// Stop ends the server.
func (s *Server) Stop() { s.Kill() }

// Client is a go-redis client of the server, closed at the test's end.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Dump returns every key and its value (strings as they are, hashes as
// field=value lines), for tests that check what Redis holds.
func (s *Server) Dump(t testing.TB) string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	ctx := context.Background()
	var b strings.Builder
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		typ, _ := c.Type(ctx, k).Result()
		fmt.Fprintf(&b, "%s (%s)\n", k, typ)
		switch typ {
		case "string":
			v, _ := c.Get(ctx, k).Result()
			fmt.Fprintf(&b, "  %s\n", v)
		case "hash":
			m, _ := c.HGetAll(ctx, k).Result()
			for f, v := range m {
				fmt.Fprintf(&b, "  %s=%s\n", f, v)
			}
		default:
			fmt.Fprintf(&b, "  (type %s not dumped)\n", typ)
		}
	}
	return b.String()
}

// Info returns one field of INFO (e.g. "total_commands_processed").
func (s *Server) Info(t testing.TB, field string) string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	info, err := c.Info(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), field+":"); ok {
			return v
		}
	}
	return ""
}

// Int is Info as a number.
func (s *Server) Int(t testing.TB, field string) int {
	n, _ := strconv.Atoi(s.Info(t, field))
	return n
}

// Sentinel is a redis-server in sentinel mode watching one master, named
// "mymaster".
type Sentinel struct {
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartSentinel runs a Sentinel that monitors master (quorum 1), on a free
// loopback port, and stops it when the test ends.
func StartSentinel(t testing.TB, master *Server) *Sentinel {
	t.Helper()
	dir := t.TempDir()
	s := &Sentinel{Addr: freeAddr(t)}
	_, port, _ := net.SplitHostPort(s.Addr)
	mhost, mport, _ := net.SplitHostPort(master.Addr)
	conf := filepath.Join(dir, "sentinel.conf")
	text := "port " + port + "\nbind 127.0.0.1\ndir " + dir + "\n" +
		"sentinel monitor mymaster " + mhost + " " + mport + " 1\n" +
		"sentinel down-after-milliseconds mymaster 1000\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel", "--logfile", filepath.Join(dir, "sentinel.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() { _ = s.cmd.Process.Kill(); <-s.done })
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if addr, err := c.GetMasterAddrByName(context.Background(), "mymaster").Result(); err == nil && len(addr) == 2 {
			return s
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			t.Fatalf("redis sentinel did not know mymaster within 10s: %s", lastLine(string(log)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartCluster runs n redis-servers in cluster mode (n ≥ 3 masters, no
// replicas), joins them with redis-cli --cluster create and waits until the
// cluster is ok. It returns the servers; any of their addresses reaches it.
func StartCluster(t testing.TB, n int) []*Server {
	t.Helper()
	var out []*Server
	var addrs []string
	for range n {
		s := start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		out = append(out, s)
		addrs = append(addrs, s.Addr)
	}
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if b, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v: %s", err, lastLine(string(b)))
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := c.ClusterInfo(context.Background()).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Redis cluster was not ok within 20s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
