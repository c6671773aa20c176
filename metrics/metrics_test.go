package metrics_test

import (
	"io"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/boxproxy/boxproxy/buildinfo"
	"github.com/boxproxy/boxproxy/metrics"
)

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return string(body)
}

func TestMetricsNilCountsNothingAndDoesNotPanic(t *testing.T) {
	var m *metrics.Metrics
	m.Request("api", 200)
	m.InFlight(1)
	m.Upstream("api", time.Second)
	m.Retry("401")
	m.TokenRequest("ccg", "ok", time.Second)
	m.CacheHit()
	m.CacheMiss()
	m.CacheEviction()
	m.CacheEvictionValid()
	m.FleetUp(true)
	m.FleetError("get")
	m.FleetCache(true)
	m.FleetLockWait(time.Second)
	m.DefaultTokenExpiry(func() float64 { return 1 })
}

func TestFleetMetricsSayWhetherRedisAnswersAndHowTheFleetCacheDoes(t *testing.T) {
	m := metrics.New()
	m.FleetUp(false)
	m.FleetError("get")
	m.FleetError("get")
	m.FleetCache(true)
	m.FleetCache(false)
	m.FleetCache(true)
	m.FleetLockWait(30 * time.Millisecond)
	m.CacheEvictionValid()
	body := scrape(t, m)
	for _, want := range []string{
		"boxproxy_fleet_redis_up 0\n",
		`boxproxy_fleet_redis_errors_total{op="get"} 2` + "\n",
		`boxproxy_fleet_cache_total{result="hit"} 2` + "\n",
		`boxproxy_fleet_cache_total{result="miss"} 1` + "\n",
		"boxproxy_fleet_lock_wait_seconds_count 1\n",
		"boxproxy_token_cache_evictions_valid_total 1\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	m.FleetUp(true)
	if !strings.Contains(scrape(t, m), "boxproxy_fleet_redis_up 1\n") {
		t.Error("boxproxy_fleet_redis_up is not 1 once Redis answers")
	}
}

func TestMetricsFollowPrometheusNamingAndCountWhatTheyAreTold(t *testing.T) {
	m := metrics.New()
	m.DefaultTokenExpiry(func() float64 { return 42 })
	m.Request("api", 200)
	m.Request("api", 200)
	m.Request("upload", 200)
	m.Request("api", 404)
	m.InFlight(1)
	m.InFlight(1)
	m.InFlight(-1)
	m.Upstream("api", 30*time.Millisecond)
	m.Upstream("upload", 2*time.Second)
	m.Retry("401")
	m.TokenRequest("jwt", "ok", 20*time.Millisecond)
	m.TokenRequest("jwt", "unavailable", time.Second)
	m.CacheHit()
	m.CacheMiss()
	m.CacheEviction()
	text := scrape(t, m)

	for _, want := range []string{
		`boxproxy_requests_total{code="200",route="api"} 2`,
		`boxproxy_requests_total{code="200",route="upload"} 1`,
		`boxproxy_requests_total{code="404",route="api"} 1`,
		`boxproxy_requests_in_flight 1`,
		`boxproxy_upstream_request_duration_seconds_count{route="api"} 1`,
		`boxproxy_upstream_request_duration_seconds_bucket{route="api",le="0.05"} 1`,
		`boxproxy_upstream_request_duration_seconds_bucket{route="upload",le="1"} 0`,
		`boxproxy_upstream_retries_total{reason="401"} 1`,
		`boxproxy_token_requests_total{method="jwt",outcome="ok"} 1`,
		`boxproxy_token_requests_total{method="jwt",outcome="unavailable"} 1`,
		`boxproxy_token_request_duration_seconds_count{method="jwt"} 2`,
		`boxproxy_token_cache_hits_total 1`,
		`boxproxy_token_cache_misses_total 1`,
		`boxproxy_token_cache_evictions_total 1`,
		`boxproxy_default_token_expiry_seconds 42`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	types := regexp.MustCompile(`(?m)^# TYPE (boxproxy_\S+) (\S+)$`).FindAllStringSubmatch(text, -1)
	if len(types) < 10 {
		t.Fatalf("only %d boxproxy metrics", len(types))
	}
	for _, ty := range types {
		name, kind := ty[1], ty[2]
		if (kind == "counter") != strings.HasSuffix(name, "_total") {
			t.Errorf("%s is a %s: counters, and only counters, end in _total", name, kind)
		}
		if kind == "histogram" && !strings.HasSuffix(name, "_seconds") {
			t.Errorf("histogram %s does not end in its unit _seconds", name)
		}
	}
	if !regexp.MustCompile(`(?m)^# HELP boxproxy_requests_total \S`).MatchString(text) {
		t.Error("metrics have no help text")
	}
}

func TestMetricsBuildInfoSaysWhichBuildRuns(t *testing.T) {
	m := metrics.New()
	want := buildinfo.Read("")
	line := `boxproxy_build_info{goversion="` + want.GoVersion + `",revision="` + want.Revision + `",version="` + want.Version + `"} 1`
	if body := scrape(t, m); !strings.Contains(body, line+"\n") {
		t.Errorf("/metrics lacks %s", line)
	}
	m.SetBuildInfo(buildinfo.Info{Version: "v9.9.9", Revision: "abc123", GoVersion: runtime.Version()})
	body := scrape(t, m)
	if n := strings.Count(body, "boxproxy_build_info{"); n != 1 ||
		!strings.Contains(body, `boxproxy_build_info{goversion="`+runtime.Version()+`",revision="abc123",version="v9.9.9"} 1`) {
		t.Errorf("after SetBuildInfo, %d build_info series:\n%s", n, body)
	}
	var nilM *metrics.Metrics
	nilM.SetBuildInfo(want)
}
