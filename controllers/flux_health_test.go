package controllers

import (
	"context"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// TestHealthCheckRequests: a Delivery that stops being Ready asks Flux to
// health check the Kustomization that applied it again, when those checks
// cover the Delivery and last passed, once for all its Deliveries until
// Flux handled the request.
func TestHealthCheckRequests(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	scheme := runtime.NewScheme()
	g.Expect(kustomizev1.AddToScheme(scheme)).To(Succeed())
	g.Expect(deliveryv1.AddToScheme(scheme)).To(Succeed())
	c, err := client.New(testConfig, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())

	kustomization := func(name string, ready metav1.ConditionStatus, set func(*kustomizev1.Kustomization)) {
		ks := &kustomizev1.Kustomization{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: kustomizev1.KustomizationSpec{Interval: metav1.Duration{Duration: time.Hour}, Path: "./" + name,
				SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "fleet"}},
		}
		set(ks)
		g.Expect(c.Create(ctx, ks)).To(Succeed())
		conditions.Set(ks, &metav1.Condition{Type: meta.ReadyCondition, Status: ready, Reason: "Test", Message: "set by the test"})
		g.Expect(c.Status().Update(ctx, ks)).To(Succeed())
	}
	wait := func(ks *kustomizev1.Kustomization) { ks.Spec.Wait = true }
	checks := func(refs ...meta.NamespacedObjectKindReference) func(*kustomizev1.Kustomization) {
		return func(ks *kustomizev1.Kustomization) { ks.Spec.HealthChecks = refs }
	}
	delivery := func(name, appliedBy string) *deliveryv1.Delivery {
		d := newDelivery(ns, name, "canary", "")
		if appliedBy != "" {
			d.Labels = map[string]string{kustomizationNameLabel: appliedBy, kustomizationNamespaceLabel: ns}
		}
		return d
	}
	kustomization("waits", metav1.ConditionTrue, wait)
	kustomization("checks-web", metav1.ConditionTrue, checks(meta.NamespacedObjectKindReference{
		APIVersion: deliveryv1.GroupVersion.String(), Kind: deliveryv1.DeliveryKind, Name: "web"}))
	kustomization("checks-other", metav1.ConditionTrue, checks(meta.NamespacedObjectKindReference{
		APIVersion: deliveryv1.GroupVersion.String(), Kind: deliveryv1.DeliveryKind, Name: "other"}))
	kustomization("checks-nothing", metav1.ConditionTrue, func(*kustomizev1.Kustomization) {})
	kustomization("failing", metav1.ConditionFalse, wait)
	kustomization("suspended", metav1.ConditionTrue, func(ks *kustomizev1.Kustomization) { ks.Spec.Wait, ks.Spec.Suspend = true, true })

	now := time.Now()
	for name, tc := range map[string]struct {
		d    *deliveryv1.Delivery
		want bool
	}{
		"wait: true":                          {d: delivery("web", "waits"), want: true},
		"healthChecks name the Delivery":      {d: delivery("web", "checks-web"), want: true},
		"healthChecks name another":           {d: delivery("web", "checks-other")},
		"no health checks":                    {d: delivery("web", "checks-nothing")},
		"the last health checks failed":       {d: delivery("web", "failing")},
		"suspended":                           {d: delivery("web", "suspended")},
		"not applied by a Kustomization":      {d: delivery("web", "")},
		"applied by a Kustomization now gone": {d: delivery("web", "gone")},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			var h healthCheckRequests
			asked, err := h.request(ctx, c, tc.d, now)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(asked).To(Equal(tc.want))
		})
	}

	// One request serves every Delivery until Flux handles it, and the
	// next is asked only after Flux did.
	var h healthCheckRequests
	ks := &kustomizev1.Kustomization{}
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "waits"}, ks)).To(Succeed())
	pending, ok := meta.ReconcileAnnotationValue(ks.Annotations)
	g.Expect(ok).To(BeTrue(), "the first case asked")
	g.Expect(h.request(ctx, c, delivery("api", "waits"), now)).To(BeFalse(), "Flux has not handled the request yet")
	ks.Status.LastHandledReconcileAt = pending
	g.Expect(c.Status().Update(ctx, ks)).To(Succeed())
	g.Expect(h.request(ctx, c, delivery("web", "waits"), now)).To(BeTrue())
	g.Expect(h.request(ctx, c, delivery("api", "waits"), now.Add(time.Second))).To(BeFalse(), "asked a second ago")
	g.Expect(c.Get(ctx, client.ObjectKeyFromObject(ks), ks)).To(Succeed())
	again, _ := meta.ReconcileAnnotationValue(ks.Annotations)
	g.Expect(again).NotTo(Equal(pending), "asked again")
}

// TestStoppedBeingReady: only a Delivery that was Ready and is not asks.
func TestStoppedBeingReady(t *testing.T) {
	withReady := func(status metav1.ConditionStatus) *deliveryv1.Delivery {
		d := &deliveryv1.Delivery{}
		if status != "" {
			conditions.Set(d, &metav1.Condition{Type: meta.ReadyCondition, Status: status, Reason: "Test"})
		}
		return d
	}
	for _, tc := range []struct {
		read, now metav1.ConditionStatus
		want      bool
	}{
		{metav1.ConditionTrue, metav1.ConditionFalse, true},
		{metav1.ConditionTrue, metav1.ConditionUnknown, true},
		{metav1.ConditionTrue, metav1.ConditionTrue, false},
		{metav1.ConditionFalse, metav1.ConditionFalse, false},
		{metav1.ConditionUnknown, metav1.ConditionFalse, false},
		{"", metav1.ConditionUnknown, false},
	} {
		if got := stoppedBeingReady(withReady(tc.read), withReady(tc.now)); got != tc.want {
			t.Errorf("Ready %q → %q: stoppedBeingReady = %t, want %t", tc.read, tc.now, got, tc.want)
		}
	}
}
