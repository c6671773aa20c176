// Package metrics holds boxproxy's Prometheus collectors. One *Metrics is made at
// start and handed to the packages that count things; a nil *Metrics counts nothing,
// so that unit tests and commands can leave it out.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/boxproxy/boxproxy/buildinfo"
)

// Metrics are the collectors boxproxy exports on /metrics.
type Metrics struct {
	reg *prometheus.Registry

	requests         *prometheus.CounterVec   // route, code
	inFlight         prometheus.Gauge         //
	upstreamDuration *prometheus.HistogramVec // route
	retries          *prometheus.CounterVec   // reason
	tokenRequests    *prometheus.CounterVec   // method, outcome
	tokenDuration    *prometheus.HistogramVec // method
	cacheHits        prometheus.Counter
	cacheMisses      prometheus.Counter
	cacheEvictions   prometheus.Counter
	cacheEvictValid  prometheus.Counter
	fleetUp          prometheus.Gauge
	fleetErrors      *prometheus.CounterVec // op
	fleetCache       *prometheus.CounterVec // result
	fleetLockWait    prometheus.Histogram
	buildInfo        *prometheus.GaugeVec // version, revision, goversion

	// fast paths for the labels of every proxied request
	apiOK, uploadOK prometheus.Counter
	apiDur, upDur   prometheus.Observer
}

// New makes the collectors and registers them, with Go's runtime and process
// collectors, in a registry of their own.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "boxproxy_requests_total",
		Help: "Requests served, by route (api, upload, healthz, readyz, metrics, auth, quit, other) and HTTP status code.",
	}, []string{"route", "code"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "boxproxy_requests_in_flight",
		Help: "Requests being served right now.",
	})
	m.upstreamDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "boxproxy_upstream_request_duration_seconds",
		Help:    "Time from sending a request to Box until its response headers arrive, by route; every attempt counts.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "boxproxy_upstream_retries_total",
		Help: "Requests sent to Box once more, by reason (401: token rejected; 429, 5xx, network: BOXPROXY_UPSTREAM_RETRIES).",
	}, []string{"reason"})
	m.tokenRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "boxproxy_token_requests_total",
		Help: "Requests to Box's token endpoint, by grant (ccg, jwt, oauth) and outcome (ok, config_error, grant_error, unavailable, bad_response, timeout).",
	}, []string{"method", "outcome"})
	m.tokenDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "boxproxy_token_request_duration_seconds",
		Help:    "Latency of Box's token endpoint, by grant.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"method"})
	m.cacheHits = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "boxproxy_token_cache_hits_total",
		Help: "Token look-ups answered from the cache.",
	})
	m.cacheMisses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "boxproxy_token_cache_misses_total",
		Help: "Token look-ups that had to wait for the token endpoint.",
	})
	m.cacheEvictions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "boxproxy_token_cache_evictions_total",
		Help: "Subjects' tokens dropped from the cache because it was full.",
	})
	m.cacheEvictValid = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "boxproxy_token_cache_evictions_valid_total",
		Help: "Evicted tokens that were still valid: when this grows fast, BOXPROXY_TOKEN_CACHE_SIZE is too small for the subjects in use.",
	})
	m.fleetUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "boxproxy_fleet_redis_up",
		Help: "1 while the fleet's Redis (BOXPROXY_REDIS_URL) answers; 0 while this replica works alone (Redis unreachable, or no BOXPROXY_REDIS_URL).",
	})
	m.fleetErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "boxproxy_fleet_redis_errors_total",
		Help: "Redis operations that failed or timed out, by operation.",
	}, []string{"op"})
	m.fleetCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "boxproxy_fleet_cache_total",
		Help: "Local cache misses answered through the fleet, by result (hit: a token from Redis; miss: this replica asked Box for the fleet).",
	}, []string{"result"})
	m.fleetLockWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "boxproxy_fleet_lock_wait_seconds",
		Help:    "Time spent waiting for another replica's token request or OAuth refresh (fleet lock).",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	m.buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "boxproxy_build_info",
		Help: "Always 1; its labels say which build runs: module version, VCS revision and Go version (as boxproxy version prints them).",
	}, []string{"version", "revision", "goversion"})
	m.SetBuildInfo(buildinfo.Read(""))
	m.reg.MustRegister(m.buildInfo, m.requests, m.inFlight, m.upstreamDuration, m.retries, m.tokenRequests,
		m.tokenDuration, m.cacheHits, m.cacheMisses, m.cacheEvictions, m.cacheEvictValid,
		m.fleetUp, m.fleetErrors, m.fleetCache, m.fleetLockWait,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.apiOK = m.requests.WithLabelValues("api", "200")
	m.uploadOK = m.requests.WithLabelValues("upload", "200")
	m.apiDur = m.upstreamDuration.WithLabelValues("api")
	m.upDur = m.upstreamDuration.WithLabelValues("upload")
	return m
}

// SetBuildInfo replaces the labels of boxproxy_build_info, for a version
// given at link time.
func (m *Metrics) SetBuildInfo(i buildinfo.Info) {
	if m == nil {
		return
	}
	m.buildInfo.Reset()
	m.buildInfo.WithLabelValues(i.Version, i.Revision, i.GoVersion).Set(1)
}

// Handler serves the metrics in Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// DefaultTokenExpiry exports the seconds until the default subject's token expires,
// asking f whenever it is scraped.
func (m *Metrics) DefaultTokenExpiry(f func() float64) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "boxproxy_default_token_expiry_seconds",
		Help: "Seconds until the default subject's cached token expires (0 when none is cached; +Inf for a developer token).",
	}, f))
}

// Request counts one finished request.
func (m *Metrics) Request(route string, code int) {
	if m == nil {
		return
	}
	if code == 200 {
		switch route {
		case "api":
			m.apiOK.Inc()
			return
		case "upload":
			m.uploadOK.Inc()
			return
		}
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
}

// InFlight adds d to the requests in flight.
func (m *Metrics) InFlight(d float64) {
	if m != nil {
		m.inFlight.Add(d)
	}
}

// Upstream records how long Box took to answer one attempt.
func (m *Metrics) Upstream(route string, d time.Duration) {
	if m == nil {
		return
	}
	switch route {
	case "api":
		m.apiDur.Observe(d.Seconds())
	case "upload":
		m.upDur.Observe(d.Seconds())
	default:
		m.upstreamDuration.WithLabelValues(route).Observe(d.Seconds())
	}
}

// Retry counts one more attempt at Box, for reason.
func (m *Metrics) Retry(reason string) {
	if m != nil {
		m.retries.WithLabelValues(reason).Inc()
	}
}

// TokenRequest counts one call of the token endpoint.
func (m *Metrics) TokenRequest(method, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.tokenRequests.WithLabelValues(method, outcome).Inc()
	m.tokenDuration.WithLabelValues(method).Observe(d.Seconds())
}

// CacheHit, CacheMiss and CacheEviction count token cache events.
func (m *Metrics) CacheHit() {
	if m != nil {
		m.cacheHits.Inc()
	}
}

// CacheMiss counts a look-up that had to wait for a token.
func (m *Metrics) CacheMiss() {
	if m != nil {
		m.cacheMisses.Inc()
	}
}

// CacheEviction counts a subject dropped because the cache was full.
func (m *Metrics) CacheEviction() {
	if m != nil {
		m.cacheEvictions.Inc()
	}
}

// CacheEvictionValid counts an evicted token that was still valid.
func (m *Metrics) CacheEvictionValid() {
	if m != nil {
		m.cacheEvictValid.Inc()
	}
}

// FleetUp records whether the fleet's Redis answers.
func (m *Metrics) FleetUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.fleetUp.Set(1)
	} else {
		m.fleetUp.Set(0)
	}
}

// FleetError counts a failed Redis operation.
func (m *Metrics) FleetError(op string) {
	if m != nil {
		m.fleetErrors.WithLabelValues(op).Inc()
	}
}

// FleetCache counts a local miss answered from Redis (hit) or by this
// replica's own token request for the fleet (miss).
func (m *Metrics) FleetCache(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.fleetCache.WithLabelValues("hit").Inc()
	} else {
		m.fleetCache.WithLabelValues("miss").Inc()
	}
}

// FleetLockWait records a wait for another replica's token request or refresh.
func (m *Metrics) FleetLockWait(d time.Duration) {
	if m != nil {
		m.fleetLockWait.Observe(d.Seconds())
	}
}
