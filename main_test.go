package main

import (
	"testing"
	"time"

	"github.com/fluxcd/pkg/runtime/jitter"
	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
)

// TestKeepManagedFieldsOf: a cached Deployment keeps sluice's managed
// fields, which the handover reads, and loses everyone else's.
func TestKeepManagedFieldsOf(t *testing.T) {
	entry := func(manager string, op metav1.ManagedFieldsOperationType) metav1.ManagedFieldsEntry {
		return metav1.ManagedFieldsEntry{Manager: manager, Operation: op, FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{"f:replicas":{}}}`)}}
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", ManagedFields: []metav1.ManagedFieldsEntry{
		entry("kustomize-controller", metav1.ManagedFieldsOperationApply),
		entry("sluice", metav1.ManagedFieldsOperationApply),
		entry("kube-controller-manager", metav1.ManagedFieldsOperationUpdate),
		entry("sluice", metav1.ManagedFieldsOperationUpdate),
	}}}
	out, err := keepManagedFieldsOf("sluice")(d)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*appsv1.Deployment).ManagedFields
	if len(got) != 2 || got[0].Manager != "sluice" || got[0].Operation != metav1.ManagedFieldsOperationApply ||
		got[1].Manager != "sluice" || got[1].Operation != metav1.ManagedFieldsOperationUpdate {
		t.Errorf("managed fields kept: %+v, want sluice's Apply and Update", got)
	}

	tombstone := toolscache.DeletedFinalStateUnknown{Key: "shop/web", Obj: d}
	if out, err := keepManagedFieldsOf("sluice")(tombstone); err != nil || out != any(tombstone) {
		t.Errorf("a tombstone comes back as %v, %v; want it as it is", out, err)
	}
}

func TestIntervalJitter(t *testing.T) {
	var o jitter.IntervalOptions
	fs := pflag.NewFlagSet("sluice", pflag.ContinueOnError)
	o.BindFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if o.Percentage == 0 {
		t.Fatal("--interval-jitter-percentage defaults to 0: intervals would not jitter")
	}
	if err := setIntervalJitter(jitter.IntervalOptions{Percentage: 100}); err == nil {
		t.Error("a jitter of 100% was accepted")
	}
	if err := setIntervalJitter(o); err != nil {
		t.Fatal(err)
	}

	const interval = 10 * time.Minute
	spread := interval * time.Duration(o.Percentage) / 100
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := jitter.JitteredIntervalDuration(interval)
		if d < interval-spread || d > interval+spread {
			t.Fatalf("jittered %s to %s, outside %s +/- %d%%", interval, d, interval, o.Percentage)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("1000 jittered intervals took %d values: the interval does not jitter", len(seen))
	}
}
