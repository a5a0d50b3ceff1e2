package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	fluxevents "github.com/fluxcd/pkg/runtime/events"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

func TestRevisionRecorder(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	scheme := runtime.NewScheme()
	g.Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	g.Expect(deliveryv1.AddToScheme(scheme)).To(Succeed())
	g.Expect(kustomizev1.AddToScheme(scheme)).To(Succeed())
	c, err := client.New(testConfig, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())

	ks := &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "apps"},
		Spec: kustomizev1.KustomizationSpec{
			Interval:  metav1.Duration{Duration: time.Minute},
			Path:      "./apps",
			SourceRef: kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: "apps"},
		},
	}
	g.Expect(c.Create(ctx, ks)).To(Succeed())
	ks.Status.LastAppliedRevision = "main@sha1:0123456789abcdef0123456789abcdef01234567"
	ks.Status.LastAppliedOriginRevision = "v1.2.3@sha256:abc"
	g.Expect(c.Status().Update(ctx, ks)).To(Succeed())

	applied := &deliveryv1.Delivery{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Labels: map[string]string{
			kustomizationNameLabel: "apps", kustomizationNamespaceLabel: ns,
		}},
		Status: deliveryv1.DeliveryStatus{LastPushedCommit: "fedcba9876543210fedcba9876543210fedcba98"},
	}
	unlabelled := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hand-written"}}
	deployment := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cm", Labels: applied.Labels}}

	fake := fluxevents.NewFakeRecorder(10, false)
	r := NewRevisionRecorder(fake, c)
	event := func(record func()) map[string]string {
		t.Helper()
		record()
		events := fake.GetEvents()
		g.Expect(events).To(HaveLen(1))
		return events[0].Annotations
	}

	for _, tt := range []struct {
		name   string
		record func()
		want   map[string]string
	}{{
		name: "a wait for approval marks the revision",
		record: func() {
			r.Eventf(applied, nil, corev1.EventTypeNormal, deliveryv1.WaitingForApprovalReason, "WriteBack", "waits")
		},
		want: map[string]string{
			"delivery.sluice.dev/revision":       ks.Status.LastAppliedRevision,
			"delivery.sluice.dev/originRevision": ks.Status.LastAppliedOriginRevision,
			"delivery.sluice.dev/commit_status":  "update",
			"delivery.sluice.dev/pushedCommit":   applied.Status.LastPushedCommit,
		},
	}, {
		name: "a warning carries the revision, not a commit status update",
		record: func() {
			r.Eventf(applied, nil, corev1.EventTypeWarning, deliveryv1.RejectedReason, "Reconcile", "rejected")
		},
		want: map[string]string{
			"delivery.sluice.dev/revision":       ks.Status.LastAppliedRevision,
			"delivery.sluice.dev/originRevision": ks.Status.LastAppliedOriginRevision,
			"delivery.sluice.dev/pushedCommit":   applied.Status.LastPushedCommit,
		},
	}, {
		name: "an adoption on the Kustomization, under its own group",
		record: func() {
			r.Eventf(ks, nil, corev1.EventTypeNormal, adoptedReason, "Adopt", "adopted")
		},
		want: map[string]string{
			"kustomize.toolkit.fluxcd.io/revision":       ks.Status.LastAppliedRevision,
			"kustomize.toolkit.fluxcd.io/originRevision": ks.Status.LastAppliedOriginRevision,
			"kustomize.toolkit.fluxcd.io/commit_status":  "update",
		},
	}, {
		name: "an object of the core group that Flux applied",
		record: func() {
			r.Eventf(deployment, nil, corev1.EventTypeNormal, "Other", "Adopt", "other")
		},
		want: map[string]string{
			"/revision":       ks.Status.LastAppliedRevision,
			"/originRevision": ks.Status.LastAppliedOriginRevision,
		},
	}, {
		name: "the caller's annotations win",
		record: func() {
			r.AnnotatedEventf(applied, nil, map[string]string{"delivery.sluice.dev/revision": "main@sha1:feed", "x": "y"},
				corev1.EventTypeNormal, "Other", "Reconcile", "other")
		},
		want: map[string]string{
			"delivery.sluice.dev/revision":       "main@sha1:feed",
			"delivery.sluice.dev/originRevision": ks.Status.LastAppliedOriginRevision,
			"delivery.sluice.dev/pushedCommit":   applied.Status.LastPushedCommit,
			"x":                                  "y",
		},
	}, {
		name: "a Delivery no Kustomization applied carries nothing",
		record: func() {
			r.Eventf(unlabelled, nil, corev1.EventTypeNormal, promotedReason, "Reconcile", "promoted")
		},
		want: nil,
	}, {
		name: "a revision Flux applied and still health-checks",
		record: func() {
			ks.Status.LastAttemptedRevision = "main@sha1:89abcdef0123456789abcdef0123456789abcdef"
			conditions.MarkUnknown(ks, meta.ReadyCondition, meta.ProgressingReason, "Running health checks")
			g.Expect(c.Status().Update(ctx, ks)).To(Succeed())
			r.Eventf(ks, nil, corev1.EventTypeNormal, adoptedReason, "Adopt", "adopted")
		},
		want: map[string]string{
			"kustomize.toolkit.fluxcd.io/revision":      "main@sha1:89abcdef0123456789abcdef0123456789abcdef",
			"kustomize.toolkit.fluxcd.io/commit_status": "update",
		},
	}, {
		name: "a revision Flux failed to apply is not the one that runs",
		record: func() {
			conditions.MarkFalse(ks, meta.ReadyCondition, meta.ReconciliationFailedReason, "apply failed")
			g.Expect(c.Status().Update(ctx, ks)).To(Succeed())
			r.Eventf(applied, nil, corev1.EventTypeWarning, "Other", "Reconcile", "other")
		},
		want: map[string]string{
			"delivery.sluice.dev/revision":       ks.Status.LastAppliedRevision,
			"delivery.sluice.dev/originRevision": ks.Status.LastAppliedOriginRevision,
			"delivery.sluice.dev/pushedCommit":   applied.Status.LastPushedCommit,
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			got := event(tt.record)
			if tt.want == nil {
				g.Expect(got).To(BeNil())
				return
			}
			g.Expect(got).To(Equal(tt.want))
		})
	}
	g.Expect(approvalRequest("abc", nil, "sluice/promote/x", "main")).To(Equal(
		"template abc waits for approval: merge promotion branch sluice/promote/x into main to promote it"))
}

func TestAdoptedMessage(t *testing.T) {
	commit := "0123456789abcdef0123456789abcdef01234567"
	one := []adoptedDeployment{{key: client.ObjectKey{Namespace: "shop", Name: "web"}, file: "apps/web-delivery.yaml"}}
	if got, want := adoptedMessage(one, commit), "adopted Deployment shop/web: pushed 0123456789ab, the Delivery is in apps/web-delivery.yaml"; got != want {
		t.Errorf("one Deployment: got %q, want %q", got, want)
	}

	var many []adoptedDeployment
	for i := range 12 {
		many = append(many, adoptedDeployment{key: client.ObjectKey{Namespace: "fleet", Name: fmt.Sprintf("app-%02d", i)}})
	}
	got := adoptedMessage(many, commit)
	for _, want := range []string{"adopted 12 Deployments (fleet/app-00, ", "fleet/app-09 and 2 more)", "pushed 0123456789ab"} {
		if !strings.Contains(got, want) {
			t.Errorf("twelve Deployments: %q does not say %q", got, want)
		}
	}
	if strings.Contains(got, "fleet/app-10") {
		t.Errorf("twelve Deployments: %q names more than %d", got, adoptedMessageNames)
	}
}
