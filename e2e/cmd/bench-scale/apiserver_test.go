package main

import (
	"strings"
	"testing"
)

func TestParseAPIRequests(t *testing.T) {
	metrics := `# HELP apiserver_request_duration_seconds [STABLE] Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1",le="0.005"} 3
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 1.5
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 10
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="All",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 0.5
apiserver_request_duration_seconds_count{component="apiserver",dry_run="All",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 4
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="apps",resource="replicasets",scope="resource",subresource="status",verb="PUT",version="v1"} 2
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="apps",resource="replicasets",scope="resource",subresource="status",verb="PUT",version="v1"} 8
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 900
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 3
`
	got, err := parseAPIRequests(strings.NewReader(metrics))
	if err != nil {
		t.Fatal(err)
	}
	want := apiRequests{
		"APPLY deployments":           {count: 10, seconds: 1.5},
		"APPLY deployments (dry run)": {count: 4, seconds: 0.5},
		"PUT replicasets/status":      {count: 8, seconds: 2},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %+v, want %+v", k, got[k], w)
		}
	}

	later := apiRequests{"APPLY deployments": {count: 15, seconds: 2.5}, "PUT replicasets/status": {count: 8, seconds: 2}}
	since := later.since(got)
	if len(since) != 1 || since["APPLY deployments"] != (apiCost{count: 5, seconds: 1}) {
		t.Errorf("since: got %v, want only 5 APPLY deployments in 1 s", since)
	}
}
