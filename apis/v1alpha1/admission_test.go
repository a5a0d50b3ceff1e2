package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// These tests send objects to a real kube-apiserver with sluice's CRDs
// installed, so the CEL rules, OpenAPI validation and defaults are the ones
// users meet at admission.

var k8sClient client.Client

func TestMain(m *testing.M) {
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting envtest (run 'make tools' first): %v\n", err)
		// A start that failed installing the CRDs leaves the control
		// plane running.
		_ = env.Stop()
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := deliveryv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping envtest: %v\n", err)
	}
	os.Exit(code)
}

// object decodes one YAML document into an unstructured object in the
// default namespace, named by the API server.
func object(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := utilyaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatalf("decoding test object: %v", err)
	}
	obj.SetNamespace("default")
	obj.SetGenerateName("test-")
	return obj
}

func TestDeliveryPolicyAdmission(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr []string // substrings of the API server's answer; none means accepted
	}{
		{
			name: "canary with gateway routing, analysis and a manual gate",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary:
    trafficRouting:
      gatewayAPI: {httpRoute: web, stableService: web-stable, canaryService: web-canary}
    steps:
    - setWeight: 10
    - analysis: {templates: [{name: success-rate}], args: [{name: svc, value: web}]}
    - pause: {}
    - setWeight: 10
    - pause: {duration: 1h30m}
    - setWeight: 100`,
		},
		{
			name: "blue-green with pre-promotion analysis",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  blueGreen:
    activeService: web
    previewService: web-preview
    prePromotionAnalysis: {templates: [{name: smoke, clusterScope: true}]}`,
		},
		{
			name: "weight above 100",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary:
    steps: [{setWeight: 20}, {setWeight: 120}]`,
			wantErr: []string{"spec.canary.steps[1].setWeight", "less than or equal to 100"},
		},
		{
			name: "negative weight",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary:
    steps: [{setWeight: -5}]`,
			wantErr: []string{"spec.canary.steps[0].setWeight", "greater than or equal to 0"},
		},
		{
			name: "decreasing weights",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary:
    steps: [{setWeight: 50}, {pause: {}}, {setWeight: 20}]`,
			wantErr: []string{"spec.canary.steps", "setWeight must not decrease"},
		},
		{
			name: "blue-green without an active Service",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  blueGreen:
    previewService: web-preview`,
			wantErr: []string{"spec.blueGreen.activeService", "Required value"},
		},
		{
			name: "blue-green with an empty active Service",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  blueGreen:
    activeService: ""`,
			wantErr: []string{"spec.blueGreen.activeService"},
		},
		{
			name: "blue-green previewing through the active Service",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  blueGreen: {activeService: web, previewService: web}`,
			wantErr: []string{"spec.blueGreen", "previewService must differ from activeService"},
		},
		{
			name: "both strategies",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary: {steps: [{setWeight: 10}]}
  blueGreen: {activeService: web}`,
			wantErr: []string{"spec", "exactly one of spec.canary and spec.blueGreen must be set"},
		},
		{
			name: "no strategy",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  git: {rollback: revert}`,
			wantErr: []string{"exactly one of spec.canary and spec.blueGreen must be set"},
		},
		{
			name: "pause duration that does not parse",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary:
    steps: [{setWeight: 10}, {pause: {duration: 5 minutes}}]`,
			wantErr: []string{"spec.canary.steps[1].pause.duration", "must be a duration"},
		},
		{
			name: "step with two actions",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary:
    steps: [{setWeight: 10, pause: {}}]`,
			wantErr: []string{"spec.canary.steps[0]", "a step sets exactly one of setWeight, pause and analysis"},
		},
		{
			name: "canary without steps",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary: {steps: []}`,
			wantErr: []string{"spec.canary.steps"},
		},
		{
			name: "gateway routing without a canary Service",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary:
    trafficRouting: {gatewayAPI: {httpRoute: web, stableService: web-stable}}
    steps: [{setWeight: 10}]`,
			wantErr: []string{"spec.canary.trafficRouting.gatewayAPI.canaryService", "Required value"},
		},
		{
			name: "analysis arg with both value and valueFrom",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary:
    steps:
    - analysis:
        templates: [{name: t}]
        args: [{name: hash, value: x, valueFrom: {podTemplateHashValue: Latest}}]`,
			wantErr: []string{"spec.canary.steps[0].analysis.args[0]", "exactly one of value and valueFrom"},
		},
		{
			name: "unknown rollback mode",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary: {steps: [{setWeight: 10}]}
  git: {rollback: forget}`,
			wantErr: []string{"spec.git.rollback", `supported values: "record", "revert"`},
		},
		{
			name: "promotion branch template without the step",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary: {steps: [{setWeight: 10}]}
  git: {push: {promotionBranchTemplate: "release/{{.Name}}-{{.Hash}}"}}`,
			wantErr: []string{"spec.git.push.promotionBranchTemplate", "must use {{.Step}} and {{.Hash}}"},
		},
		{
			name: "promotion branch template without the hash",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary: {steps: [{setWeight: 10}]}
  git: {push: {promotionBranchTemplate: "release/{{.Name}}"}}`,
			wantErr: []string{"spec.git.push.promotionBranchTemplate", "must use {{.Step}} and {{.Hash}}"},
		},
		{
			name: "promotion branch template with no fixed prefix",
			doc: `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  canary: {steps: [{setWeight: 10}]}
  git: {push: {promotionBranchTemplate: "{{.Step}}-{{ .Hash }}"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			obj := object(t, tt.doc)
			err := k8sClient.Create(context.Background(), obj)
			if len(tt.wantErr) == 0 {
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(k8sClient.Delete(context.Background(), obj)).To(Succeed())
				return
			}
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
			for _, want := range tt.wantErr {
				g.Expect(err.Error()).To(ContainSubstring(want))
			}
		})
	}
}

func TestDeliveryPolicyDefaults(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	obj := object(t, `
apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
spec:
  blueGreen: {activeService: web}`)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })

	policy := &deliveryv1.DeliveryPolicy{}
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), policy)).To(Succeed())
	g.Expect(policy.Spec.Git.Rollback).To(Equal(deliveryv1.RollbackRecord))
	g.Expect(policy.Spec.Git.Commit.Author).To(Equal(deliveryv1.CommitUser{Name: "sluice", Email: "sluice@sluice.dev"}))
	g.Expect(policy.Spec.Git.Push.PromotionBranchTemplate).To(Equal("sluice/promote/{{.Namespace}}/{{.Name}}/{{.Step}}-{{.Hash}}"))
	g.Expect(policy.Spec.BlueGreen.AutoPromotionEnabled).To(HaveValue(BeTrue()))
	g.Expect(policy.Spec.BlueGreen.ScaleDownDelaySeconds).To(HaveValue(BeEquivalentTo(30)))
	g.Expect(policy.Strategy()).To(Equal(deliveryv1.StrategyBlueGreen))
}

func TestDeliveryAdmission(t *testing.T) {
	ctx := context.Background()

	t.Run("defaults", func(t *testing.T) {
		g := NewWithT(t)
		obj := object(t, `
apiVersion: delivery.sluice.dev/v1alpha1
kind: Delivery
spec:
  deploymentRef: {name: web}
  strategy: canary`)
		g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })

		d := &deliveryv1.Delivery{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), d)).To(Succeed())
		g.Expect(d.Spec.Replicas).To(HaveValue(BeEquivalentTo(1)))
		g.Expect(d.Spec.Interval.Duration.String()).To(Equal("10m0s"))
		g.Expect(d.Spec.PolicyRef).To(BeNil())
	})

	t.Run("unknown strategy", func(t *testing.T) {
		g := NewWithT(t)
		obj := object(t, `
apiVersion: delivery.sluice.dev/v1alpha1
kind: Delivery
spec:
  deploymentRef: {name: web}
  strategy: rolling`)
		err := k8sClient.Create(ctx, obj)
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
		g.Expect(err.Error()).To(ContainSubstring("spec.strategy"))
		g.Expect(err.Error()).To(ContainSubstring(`supported values: "canary", "blue-green"`))
	})

	t.Run("negative replicas", func(t *testing.T) {
		g := NewWithT(t)
		obj := object(t, `
apiVersion: delivery.sluice.dev/v1alpha1
kind: Delivery
spec:
  deploymentRef: {name: web}
  strategy: canary
  replicas: -1`)
		err := k8sClient.Create(ctx, obj)
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
		g.Expect(err.Error()).To(ContainSubstring("spec.replicas"))
	})

	t.Run("deploymentRef is immutable", func(t *testing.T) {
		g := NewWithT(t)
		obj := object(t, `
apiVersion: delivery.sluice.dev/v1alpha1
kind: Delivery
spec:
  deploymentRef: {name: web}
  strategy: canary`)
		g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })

		d := &deliveryv1.Delivery{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), d)).To(Succeed())
		d.Spec.DeploymentRef.Name = "other"
		err := k8sClient.Update(ctx, d)
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
		g.Expect(err.Error()).To(ContainSubstring("spec.deploymentRef"))
		g.Expect(err.Error()).To(ContainSubstring("deploymentRef is immutable"))
	})

	t.Run("approvals are keyed by template hash and step", func(t *testing.T) {
		g := NewWithT(t)
		obj := object(t, `
apiVersion: delivery.sluice.dev/v1alpha1
kind: Delivery
spec:
  deploymentRef: {name: web}
  strategy: canary
  promotion:
    approvals:
    - {templateHash: abc, step: 2}
    - {templateHash: abc, step: 2}`)
		err := k8sClient.Create(ctx, obj)
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
		g.Expect(err.Error()).To(ContainSubstring("spec.promotion.approvals[1]"))
		g.Expect(err.Error()).To(ContainSubstring("Duplicate value"))
	})
}

// TestSamples applies every document in config/samples.
func TestSamples(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join("..", "..", "config", "samples", "delivery_*.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(files).To(HaveLen(2))

	kinds := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		g.Expect(err).NotTo(HaveOccurred())
		for _, doc := range strings.Split(string(data), "\n---\n") {
			obj := &unstructured.Unstructured{}
			g.Expect(utilyaml.Unmarshal([]byte(doc), &obj.Object)).To(Succeed(), f)
			obj.SetNamespace("default")
			g.Expect(k8sClient.Create(ctx, obj)).To(Succeed(), "%s: %s", f, obj.GetName())
			t.Cleanup(func() { _ = k8sClient.Delete(ctx, obj) })
			kinds[obj.GetKind()]++
		}
	}
	g.Expect(kinds).To(Equal(map[string]int{deliveryv1.DeliveryKind: 1, deliveryv1.DeliveryPolicyKind: 2}))

	policy := &deliveryv1.DeliveryPolicy{}
	g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "default", Name: "canary-with-approval"}, policy)).To(Succeed())
	g.Expect(policy.Spec.Canary.Steps).To(HaveLen(6))
	g.Expect(policy.Spec.Canary.Steps[2].Pause).NotTo(BeNil())
	g.Expect(policy.Spec.Canary.Steps[2].Pause.Duration).To(BeEmpty())
	g.Expect(policy.Spec.Git.Rollback).To(Equal(deliveryv1.RollbackRevert))
}
