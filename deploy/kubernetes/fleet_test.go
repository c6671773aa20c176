package kubernetes

import (
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// The fleet example (fleet/): several replicas with boxproxy sidecars sharing
// one Redis, every secret a file.

func fleetDocs(t *testing.T) map[string][]doc {
	t.Helper()
	out := map[string][]doc{}
	for _, f := range []string{"fleet/deployment.yaml", "fleet/redis.yaml", "fleet/secret.yaml.example"} {
		for _, d := range readDocs(t, f) {
			out[d.kind] = append(out[d.kind], d)
		}
	}
	return out
}

func TestFleetIsSeveralReplicasWhoseSidecarsReadRedisURLAndStoreKeyFromSecretFiles(t *testing.T) {
	docs := fleetDocs(t)
	if len(docs["apps/v1/Deployment"]) != 1 {
		t.Fatalf("want one Deployment in fleet/deployment.yaml, have %d", len(docs["apps/v1/Deployment"]))
	}
	var dep appsv1.Deployment
	strict(t, docs["apps/v1/Deployment"][0], &dep)
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 3 {
		t.Errorf("replicas %v, want several (≥ 3)", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	var sidecar *corev1.Container
	for i := range pod.InitContainers {
		if pod.InitContainers[i].Name == "boxproxy" {
			sidecar = &pod.InitContainers[i]
		}
	}
	if sidecar == nil || sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatal("boxproxy is not a native sidecar (initContainers with restartPolicy: Always)")
	}
	for _, name := range []string{"BOXPROXY_REDIS_URL", "BOXPROXY_STORE_KEY", "BOXPROXY_CLIENT_SECRET"} {
		if _, ok := env(*sidecar, name); ok {
			t.Errorf("%s is set as a value; secrets are files (%s_FILE)", name, name)
		}
	}
	mounts := map[string]string{} // mount path -> volume
	for _, m := range sidecar.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for name, key := range map[string]string{"BOXPROXY_REDIS_URL_FILE": "redis-url", "BOXPROXY_STORE_KEY_FILE": "store-key", "BOXPROXY_JWT_CONFIG": "config.json"} {
		path, ok := env(*sidecar, name)
		if !ok {
			t.Errorf("the sidecar has no %s", name)
			continue
		}
		vol, ok := volumes[mounts[filepath.Dir(path)]]
		if !ok || vol.Secret == nil || vol.Secret.SecretName != "boxproxy-fleet" {
			t.Errorf("%s=%s is not a file of the Secret boxproxy-fleet", name, path)
			continue
		}
		found := false
		for _, it := range vol.Secret.Items {
			found = found || (it.Key == key && it.Path == filepath.Base(path))
		}
		if !found {
			t.Errorf("%s=%s: the Secret's key %q is not mounted there", name, path, key)
		}
	}
	if v, _ := env(*sidecar, "BOXPROXY_LISTEN"); !strings.HasPrefix(v, "127.0.0.1:") {
		t.Errorf("the data port %q is not on loopback", v)
	}
}

func TestFleetRedisIsPersistentPasswordProtectedFromAFileAndReachedOnlyByTheFleet(t *testing.T) {
	docs := fleetDocs(t)
	if len(docs["apps/v1/StatefulSet"]) != 1 || len(docs["v1/Service"]) != 1 || len(docs["networking.k8s.io/v1/NetworkPolicy"]) != 1 {
		t.Fatalf("fleet/redis.yaml: want a StatefulSet, a Service and a NetworkPolicy, have %v", keys(docs))
	}
	var sts appsv1.StatefulSet
	strict(t, docs["apps/v1/StatefulSet"][0], &sts)
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Error("Redis has no persistent volume")
	}
	c := sts.Spec.Template.Spec.Containers[0]
	script := strings.Join(append(c.Command, c.Args...), " ")
	for _, want := range []string{"appendonly yes", "requirepass", "/var/run/secrets/redis/password"} {
		if !strings.Contains(script, want) {
			t.Errorf("Redis's start does not include %q", want)
		}
	}
	var svc corev1.Service
	strict(t, docs["v1/Service"][0], &svc)
	if svc.Name != "box-redis" || svc.Spec.Ports[0].Port != 6379 {
		t.Errorf("Service %s:%d, want box-redis:6379 (the URL in secret.yaml.example)", svc.Name, svc.Spec.Ports[0].Port)
	}
	var np networkingv1.NetworkPolicy
	strict(t, docs["networking.k8s.io/v1/NetworkPolicy"][0], &np)
	var dep appsv1.Deployment
	strict(t, docs["apps/v1/Deployment"][0], &dep)
	from := np.Spec.Ingress[0].From[0].PodSelector.MatchLabels
	for k, v := range from {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("the NetworkPolicy admits %s=%s, which the fleet's pods do not carry", k, v)
		}
	}
	// The templates: placeholders only, and the URL names the Service.
	var secrets []corev1.Secret
	for _, d := range docs["v1/Secret"] {
		var s corev1.Secret
		strict(t, d, &s)
		secrets = append(secrets, s)
	}
	names := map[string]corev1.Secret{}
	for _, s := range secrets {
		names[s.Name] = s
	}
	if !strings.Contains(names["boxproxy-fleet"].StringData["redis-url"], "@box-redis:6379/") {
		t.Error("secret.yaml.example's redis-url does not name the Service box-redis:6379")
	}
	if _, ok := names["box-redis"].StringData["password"]; !ok {
		t.Error("secret.yaml.example has no Secret box-redis with a password")
	}
}

func keys(m map[string][]doc) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
