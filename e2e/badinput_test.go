package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

// badInput is one thing a user gets wrong, and what they must see.
type badInput struct {
	name string
	// files the input adds to the repository (path → content) and the
	// symbolic links (path → target).
	files    map[string]string
	symlinks map[string]string
	// kustomization, when set, applies the input with a Kustomization of
	// its own: Flux refuses all of a Kustomization for it, which would hide
	// the other inputs.
	kustomization *caseKustomization
	// create makes what a cluster user makes with kubectl rather than
	// through Git.
	create func(g Gomega)
	// want is what the user sees.
	want signal
}

// caseKustomization is a Kustomization of bad inputs: its path in the
// repository, and its GitRepository's changes when it has one of its own.
type caseKustomization struct {
	path string
	// source, when set, gives the Kustomization a GitRepository of its own
	// on the same repository, changed by source.
	source func(src *sourcev1.GitRepository, pins pins)
}

// pins are the references of the repository a pinned source may follow.
type pins struct {
	tag, commit string
}

// signal is what a user sees: an event with reason about the object, or
// the object's condition of type condition with reason; the message holds
// every one of messages.
type signal struct {
	kind, namespace, name string
	// condition is empty for an event; status is the condition's.
	condition string
	status    metav1.ConditionStatus
	reason    string
	messages  []string
}

func (s signal) String() string {
	what := "event " + s.reason
	if s.condition != "" {
		what = fmt.Sprintf("condition %s=%s (%s)", s.condition, s.status, s.reason)
	}
	return fmt.Sprintf("%s of %s %s/%s with %q", what, s.kind, s.namespace, s.name, s.messages)
}

// seen returns the messages the signal's kind of signal carries now.
func (s signal) seen(g Gomega) []string {
	if s.condition == "" {
		return events(g, s.kind, s.namespace, s.name, s.reason)
	}
	var obj conditions.Getter
	key := client.ObjectKey{Namespace: s.namespace, Name: s.name}
	switch s.kind {
	case deliveryv1.DeliveryKind:
		obj = &deliveryv1.Delivery{}
	case kustomizev1.KustomizationKind:
		obj = &kustomizev1.Kustomization{}
	default:
		panic("no conditions read for kind " + s.kind)
	}
	g.Expect(k8sClient.Get(context.Background(), key, obj.(client.Object))).To(Succeed())
	c := conditions.Get(obj, s.condition)
	g.Expect(c).NotTo(BeNil(), "%s has no condition %s", key, s.condition)
	g.Expect([]string{string(c.Status), c.Reason}).To(Equal([]string{string(s.status), s.reason}), "%s: %s", key, c.Message)
	return []string{c.Message}
}

// deploymentEvent is an event with reason on Deployment namespace/name.
func deploymentEvent(namespace, name, reason string, messages ...string) signal {
	return signal{kind: "Deployment", namespace: namespace, name: name, reason: reason, messages: messages}
}

// stalledDelivery is Delivery namespace/name Stalled with reason.
func stalledDelivery(namespace, name, reason string, messages ...string) signal {
	return signal{kind: deliveryv1.DeliveryKind, namespace: namespace, name: name, condition: meta.StalledCondition, status: metav1.ConditionTrue, reason: reason, messages: messages}
}

// fluxRefuses is Kustomization flux-system/name not Ready with reason.
func fluxRefuses(name, reason string, messages ...string) signal {
	return signal{kind: kustomizev1.KustomizationKind, namespace: stack.FluxNamespace, name: name, condition: meta.ReadyCondition, status: metav1.ConditionFalse, reason: reason, messages: messages}
}

// kustomizationEvent is an event with reason on Kustomization
// flux-system/name.
func kustomizationEvent(name, reason string, messages ...string) signal {
	return signal{kind: kustomizev1.KustomizationKind, namespace: stack.FluxNamespace, name: name, reason: reason, messages: messages}
}

// badPolicy is a DeliveryPolicy named name in namespace with spec, the
// lines below spec: at two spaces.
func badPolicy(namespace, name, spec string) string {
	return fmt.Sprintf("apiVersion: delivery.sluice.dev/v1alpha1\nkind: DeliveryPolicy\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n%s", name, namespace, spec)
}

// badDelivery is a Delivery a user wrote for Deployment name, with spec
// the lines below spec: at two spaces.
func badDelivery(namespace, name, spec string) string {
	return fmt.Sprintf("apiVersion: delivery.sluice.dev/v1alpha1\nkind: Delivery\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n%s", name, namespace, spec)
}

// caseDeployment is a Deployment of one replica named name, with
// annotations.
func caseDeployment(namespace, name string, annotations ...string) string {
	return deployment(name, namespace, "1", "registry.example/"+name+":v1", annotations...)
}

// service is a Service named name that selects the pods of app.
func service(namespace, name, app string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  selector:\n    app: %s\n  ports:\n    - port: 80\n", name, namespace, app)
}

// docs joins manifests into one file.
func docs(manifests ...string) string {
	return strings.Join(manifests, "---\n")
}

// Namespaces of the bad inputs.
const (
	nsHealthy     = "bi-healthy"
	nsAnnotations = "bi-annotations"
	nsTemplates   = "bi-templates"
	nsDeliveries  = "bi-deliveries"
	nsSecrets     = "bi-secrets"
	nsForbidden   = "bi-forbidden"
	nsForged      = "bi-forged"
	nsFlux        = "bi-flux"
)

const canarySteps = "  canary:\n    steps:\n      - setWeight: 50\n      - pause: {duration: 1s}\n"

// badInputs are the cases of TestBadInput.
func badInputs() []badInput {
	const main = "apps/main/"
	ann := func(name string, annotations []string, want signal) badInput {
		return badInput{name: name, files: map[string]string{main + "annotations/" + name + ".yaml": caseDeployment(nsAnnotations, name, annotations...)}, want: want}
	}
	invalidStrategy := func(name, value string) badInput {
		return ann(name, []string{fmt.Sprintf("sluice.dev/strategy: %q", value)}, deploymentEvent(nsAnnotations, name, "InvalidStrategy",
			fmt.Sprintf("annotation sluice.dev/strategy: %q is not a strategy; use canary or blue-green", value)))
	}

	// A Delivery a user wrote beside a Deployment without annotations,
	// with the policy it names.
	delivery := func(name, strategy, policySpec string, extra string, want signal) badInput {
		files := map[string]string{main + "deliveries/" + name + ".yaml": docs(
			caseDeployment(nsDeliveries, name),
			badDelivery(nsDeliveries, name, fmt.Sprintf("  deploymentRef:\n    name: %s\n  strategy: %s\n  policyRef:\n    name: %s\n  replicas: 1\n", name, strategy, name)),
		)}
		if policySpec != "" {
			files[main+"deliveries/"+name+"-policy.yaml"] = badPolicy(nsDeliveries, name, policySpec)
		}
		if extra != "" {
			files[main+"deliveries/"+name+"-extra.yaml"] = extra
		}
		return badInput{name: name, files: files, want: want}
	}
	missing := func(name, strategy, policySpec, extra, field string) badInput {
		return delivery(name, strategy, policySpec, extra, stalledDelivery(nsDeliveries, name, deliveryv1.InvalidPolicyReason, field))
	}

	// A Deployment that names a policy whose adoption message template is
	// broken.
	template := func(name, tmpl, message string) badInput {
		return badInput{name: name, files: map[string]string{main + "templates/" + name + ".yaml": docs(
			caseDeployment(nsTemplates, name, "sluice.dev/strategy: canary", "sluice.dev/policy: "+name),
			badPolicy(nsTemplates, name, canarySteps+"  git:\n    commit:\n      messageTemplates:\n        adoption: '"+tmpl+"'\n"),
		)}, want: deploymentEvent(nsTemplates, name, "AdoptionFailed", "the DeliveryPolicy's adopt message template", message)}
	}

	// A Deployment that names a policy whose Git settings name a Secret.
	secrets := func(name, namespace, git string, messages ...string) badInput {
		return badInput{name: name, files: map[string]string{"apps/secrets/" + name + ".yaml": docs(
			caseDeployment(namespace, name, "sluice.dev/strategy: canary", "sluice.dev/policy: "+name),
			badPolicy(namespace, name, canarySteps+"  git:\n"+git),
		)}, kustomization: &caseKustomization{path: "./apps/secrets"}, want: deploymentEvent(namespace, name, "AdoptionFailed", messages...)}
	}

	// An input Flux refuses, in a Kustomization of its own.
	refused := func(name string, files map[string]string, reason string, messages ...string) badInput {
		dir := "apps/flux/" + name + "/"
		in := map[string]string{dir + "namespace.yaml": namespace(nsFlux)}
		for p, c := range files {
			in[dir+p] = c
		}
		return badInput{name: name, files: in, kustomization: &caseKustomization{path: "./" + dir}, want: fluxRefuses("bi-"+name, reason, messages...)}
	}
	refusedPolicy := func(name, spec string, messages ...string) badInput {
		return refused(name, map[string]string{"policy.yaml": badPolicy(nsFlux, name, spec)}, meta.ReconciliationFailedReason, messages...)
	}
	refusedDelivery := func(name, spec string, messages ...string) badInput {
		return refused(name, map[string]string{"delivery.yaml": docs(caseDeployment(nsFlux, name), badDelivery(nsFlux, name, spec))},
			meta.ReconciliationFailedReason, messages...)
	}

	// An annotated Deployment applied through a GitRepository pinned by
	// pin.
	pinned := func(name string, pin func(src *sourcev1.GitRepository, p pins), messages ...string) badInput {
		ns := "bi-" + name
		return badInput{name: name,
			files:         map[string]string{"apps/pinned/" + name + "/app.yaml": docs(namespace(ns), caseDeployment(ns, "web", "sluice.dev/strategy: canary"))},
			kustomization: &caseKustomization{path: "./apps/pinned/" + name, source: pin},
			want:          kustomizationEvent("bi-"+name, deliveryv1.GitSourceNotWritableReason, messages...),
		}
	}

	// Anchors that expand a few hundred bytes into 100,000 strings: Flux
	// builds it, and the API server refuses what it expands to.
	const bomb = `apiVersion: v1
kind: ConfigMap
metadata:
  name: bomb
  namespace: bi-flux
data:
  a: &a "lol"
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
`

	return []badInput{
		// Annotations of Deployments: a warning event on the Deployment,
		// nothing adopted.
		invalidStrategy("typo", "canery"),
		invalidStrategy("without-dash", "bluegreen"),
		invalidStrategy("capitalised", "Canary"),
		invalidStrategy("two-strategies", "canary,blue-green"),
		invalidStrategy("number", "1"),
		invalidStrategy("empty-strategy", ""),
		{name: "recreate", files: map[string]string{main + "annotations/recreate.yaml": strings.Replace(
			caseDeployment(nsAnnotations, "recreate", "sluice.dev/strategy: canary"), "spec:\n", "spec:\n  strategy:\n    type: Recreate\n", 1)},
			want: deploymentEvent(nsAnnotations, "recreate", "InvalidStrategy", "replaces its pods with strategy Recreate")},
		ann("policy-not-a-name", []string{"sluice.dev/strategy: canary", "sluice.dev/policy: Not_A/Name!"},
			deploymentEvent(nsAnnotations, "policy-not-a-name", deliveryv1.InvalidPolicyReason, `annotation sluice.dev/policy: "Not_A/Name!" is not a DeliveryPolicy name`)),
		ann("policy-in-other-namespace", []string{"sluice.dev/strategy: canary", "sluice.dev/policy: bi-templates/unclosed"},
			deploymentEvent(nsAnnotations, "policy-in-other-namespace", deliveryv1.InvalidPolicyReason, `"bi-templates/unclosed" is not a DeliveryPolicy name`)),
		ann("policy-missing", []string{"sluice.dev/strategy: canary", "sluice.dev/policy: nowhere"},
			deploymentEvent(nsAnnotations, "policy-missing", deliveryv1.PolicyNotFoundReason, "annotation sluice.dev/policy: DeliveryPolicy nowhere not found in namespace bi-annotations")),
		{name: "canary-with-blue-green-policy", files: map[string]string{main + "annotations/canary-with-blue-green-policy.yaml": docs(
			caseDeployment(nsAnnotations, "canary-with-blue-green-policy", "sluice.dev/strategy: canary", "sluice.dev/policy: switch"),
			badPolicy(nsAnnotations, "switch", "  blueGreen:\n    activeService: switch\n"))},
			want: deploymentEvent(nsAnnotations, "canary-with-blue-green-policy", deliveryv1.InvalidPolicyReason,
				"annotation sluice.dev/strategy is canary but DeliveryPolicy switch describes blue-green")},
		{name: "blue-green-with-canary-policy", files: map[string]string{main + "annotations/blue-green-with-canary-policy.yaml": docs(
			caseDeployment(nsAnnotations, "blue-green-with-canary-policy", "sluice.dev/strategy: blue-green", "sluice.dev/policy: steps"),
			badPolicy(nsAnnotations, "steps", canarySteps))},
			want: deploymentEvent(nsAnnotations, "blue-green-with-canary-policy", deliveryv1.InvalidPolicyReason,
				"annotation sluice.dev/strategy is blue-green but DeliveryPolicy steps describes canary")},
		ann("unknown-annotation", []string{"sluice.dev/stratgy: canary"},
			deploymentEvent(nsAnnotations, "unknown-annotation", "UnknownAnnotation", "annotation sluice.dev/stratgy is not one sluice reads", "sluice.dev/strategy")),

		// Fields that sluice would have to edit but that the file does not
		// hold literally.
		{name: "replicas-from-a-patch", files: map[string]string{
			main + "patched/deployment.yaml": caseDeployment(nsAnnotations, "patched", "sluice.dev/strategy: canary"),
			main + "patched/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deployment.yaml\npatches:\n" +
				"  - patch: |\n      apiVersion: apps/v1\n      kind: Deployment\n      metadata:\n        name: patched\n        namespace: bi-annotations\n      spec:\n        replicas: 1\n",
		}, want: deploymentEvent(nsAnnotations, "patched", "AdoptionFailed", "apps/main/patched/deployment.yaml", "is set by")},
		{name: "replicas-from-a-variable", files: map[string]string{
			main + "annotations/variable.yaml": deployment("variable", nsAnnotations, "${CASE_REPLICAS}", "registry.example/variable:v1", "sluice.dev/strategy: canary"),
		}, want: deploymentEvent(nsAnnotations, "variable", "AdoptionFailed", `"${CASE_REPLICAS}"`, "postBuild of Kustomization flux-system/badinput")},

		// Commit message templates of policies: refused before anything
		// is written.
		template("unclosed", "Adopt {{.Deployment.Name", "unclosed action"),
		template("unknown-key", "Adopt {{.Service}}", `map has no entry for key "Service"`),
		template("unknown-function", "Adopt {{shout .Strategy}}", `function "shout" not defined`),
		template("unknown-field", "Adopt {{.Deployment.Spec.Owner}}", "can't evaluate field Owner"),

		// Deliveries users wrote, and what their policies name.
		{name: "deployment-missing", files: map[string]string{main + "deliveries/ghost.yaml": badDelivery(nsDeliveries, "ghost",
			"  deploymentRef:\n    name: ghost\n  strategy: canary\n")},
			want: stalledDelivery(nsDeliveries, "ghost", deliveryv1.DeploymentNotFoundReason, "spec.deploymentRef.name: Deployment ghost not found in namespace bi-deliveries")},
		delivery("delivery-policy-missing", deliveryv1.StrategyCanary, "", "",
			stalledDelivery(nsDeliveries, "delivery-policy-missing", deliveryv1.PolicyNotFoundReason, "spec.policyRef.name: DeliveryPolicy delivery-policy-missing not found in namespace bi-deliveries")),
		delivery("strategy-mismatch", deliveryv1.StrategyBlueGreen, canarySteps, "",
			stalledDelivery(nsDeliveries, "strategy-mismatch", deliveryv1.InvalidPolicyReason, "spec.strategy is blue-green but DeliveryPolicy strategy-mismatch describes canary")),
		missing("analysis-template-missing", deliveryv1.StrategyCanary,
			"  canary:\n    steps:\n      - setWeight: 50\n      - analysis:\n          templates:\n            - name: nowhere\n", "",
			"spec.canary.steps[1].analysis.templates[0].name: AnalysisTemplate nowhere not found"),
		missing("cluster-analysis-template-missing", deliveryv1.StrategyCanary,
			"  canary:\n    steps:\n      - analysis:\n          templates:\n            - name: nowhere\n              clusterScope: true\n", "",
			"spec.canary.steps[0].analysis.templates[0].name: ClusterAnalysisTemplate nowhere not found"),
		missing("background-analysis-missing", deliveryv1.StrategyCanary,
			canarySteps+"    backgroundAnalysis:\n      templates:\n        - name: nowhere\n", "",
			"spec.canary.backgroundAnalysis.templates[0].name: AnalysisTemplate nowhere not found"),
		missing("active-service-missing", deliveryv1.StrategyBlueGreen,
			"  blueGreen:\n    activeService: nowhere\n", "",
			"spec.blueGreen.activeService: Service nowhere not found"),
		missing("preview-service-missing", deliveryv1.StrategyBlueGreen,
			"  blueGreen:\n    activeService: preview-service-missing\n    previewService: nowhere\n",
			service(nsDeliveries, "preview-service-missing", "preview-service-missing"),
			"spec.blueGreen.previewService: Service nowhere not found"),
		missing("pre-promotion-analysis-missing", deliveryv1.StrategyBlueGreen,
			"  blueGreen:\n    activeService: pre-promotion-analysis-missing\n    prePromotionAnalysis:\n      templates:\n        - name: nowhere\n",
			service(nsDeliveries, "pre-promotion-analysis-missing", "pre-promotion-analysis-missing"),
			"spec.blueGreen.prePromotionAnalysis.templates[0].name: AnalysisTemplate nowhere not found"),
		missing("stable-service-missing", deliveryv1.StrategyCanary,
			canarySteps+"    trafficRouting:\n      gatewayAPI:\n        httpRoute: stable-service-missing\n        stableService: nowhere\n        canaryService: stable-service-missing\n",
			service(nsDeliveries, "stable-service-missing", "stable-service-missing"),
			"spec.canary.trafficRouting.gatewayAPI.stableService: Service nowhere not found"),
		missing("canary-service-missing", deliveryv1.StrategyCanary,
			canarySteps+"    trafficRouting:\n      gatewayAPI:\n        httpRoute: canary-service-missing\n        stableService: canary-service-missing\n        canaryService: nowhere\n",
			service(nsDeliveries, "canary-service-missing", "canary-service-missing"),
			"spec.canary.trafficRouting.gatewayAPI.canaryService: Service nowhere not found"),
		missing("http-route-missing", deliveryv1.StrategyCanary,
			canarySteps+"    trafficRouting:\n      gatewayAPI:\n        httpRoute: nowhere\n        stableService: http-route-missing-stable\n        canaryService: http-route-missing-canary\n",
			docs(service(nsDeliveries, "http-route-missing-stable", "http-route-missing"), service(nsDeliveries, "http-route-missing-canary", "http-route-missing")),
			"spec.canary.trafficRouting.gatewayAPI.httpRoute: HTTPRoute nowhere not found"),
		{name: "stable-template-unknown", files: map[string]string{main + "deliveries/stable-template-unknown.yaml": docs(
			caseDeployment(nsDeliveries, "stable-template-unknown"),
			badDelivery(nsDeliveries, "stable-template-unknown", "  deploymentRef:\n    name: stable-template-unknown\n  strategy: canary\n"+
				"  promotion:\n    stable:\n      templateHash: \"0123456789\"\n      images:\n        - name: stable-template-unknown\n          image: registry.example/stable-template-unknown:v0\n"))},
			want: stalledDelivery(nsDeliveries, "stable-template-unknown", deliveryv1.StableTemplateMismatchReason,
				"spec.promotion.stable: template 0123456789 cannot be rebuilt from Deployment stable-template-unknown")},
		{name: "rollout-of-another", files: map[string]string{main + "deliveries/rollout-of-another.yaml": docs(
			caseDeployment(nsDeliveries, "rollout-of-another"),
			badDelivery(nsDeliveries, "rollout-of-another", "  deploymentRef:\n    name: rollout-of-another\n  strategy: canary\n"),
			`apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: rollout-of-another
  namespace: bi-deliveries
spec:
  replicas: 1
  selector:
    matchLabels:
      app: raw
  template:
    metadata:
      labels:
        app: raw
    spec:
      containers:
        - name: raw
          image: registry.example/raw:v1
  strategy:
    canary: {}
`)},
			want: stalledDelivery(nsDeliveries, "rollout-of-another", deliveryv1.RolloutConflictReason,
				"a Rollout named rollout-of-another exists in namespace bi-deliveries and does not belong to this Delivery")},

		// Secrets sluice writes with: missing, forbidden, half valid.
		secrets("push-secret-missing", nsSecrets, "    push:\n      secretRef:\n        name: nowhere\n",
			"the DeliveryPolicy's spec.git.push.secretRef: Secret bi-secrets/nowhere not found"),
		secrets("push-secret-forbidden", nsForbidden, "    push:\n      secretRef:\n        name: writer\n",
			"sluice may not read Secret bi-forbidden/writer; bind the ClusterRole sluice-secret-reader to sluice's ServiceAccount in namespace bi-forbidden"),
		secrets("push-secret-other-keys", nsSecrets, "    push:\n      secretRef:\n        name: other-keys\n", "authentication required"),
		secrets("push-secret-wrong-password", nsSecrets, "    push:\n      secretRef:\n        name: wrong-password\n", "authentication required"),
		secrets("signing-key-missing", nsSecrets, "    commit:\n      signingKey:\n        secretRef:\n          name: nowhere\n",
			"the DeliveryPolicy's spec.git.commit.signingKey.secretRef: Secret bi-secrets/nowhere not found"),
		secrets("signing-key-not-a-key", nsSecrets, "    commit:\n      signingKey:\n        secretRef:\n          name: not-a-key\n",
			"reading the OpenPGP signing key"),

		// Sources sluice may not push to.
		pinned("pinned-tag", func(src *sourcev1.GitRepository, p pins) { src.Spec.Reference = &sourcev1.GitRepositoryRef{Tag: p.tag} },
			"is pinned to tag", "have it follow a branch (spec.ref.branch)"),
		pinned("pinned-semver", func(src *sourcev1.GitRepository, p pins) {
			src.Spec.Reference = &sourcev1.GitRepositoryRef{SemVer: ">=0.1.0"}
		},
			"is pinned to semver range >=0.1.0"),
		pinned("pinned-commit", func(src *sourcev1.GitRepository, p pins) {
			src.Spec.Reference = &sourcev1.GitRepositoryRef{Branch: "main", Commit: p.commit}
		}, "is pinned to commit"),
		pinned("pinned-name", func(src *sourcev1.GitRepository, p pins) {
			src.Spec.Reference = &sourcev1.GitRepositoryRef{Name: "refs/tags/" + p.tag}
		}, "is pinned to reference refs/tags/"),
		pinned("includes", func(src *sourcev1.GitRepository, _ pins) {
			src.Spec.Include = []sourcev1.GitRepositoryInclude{{GitRepositoryRef: meta.LocalObjectReference{Name: "badinput"}, ToPath: "included"}}
		}, "includes other repositories (spec.include)"),

		// Policies and Deliveries the API server refuses: Flux says so.
		refusedPolicy("both-strategies", canarySteps+"  blueGreen:\n    activeService: web\n", "exactly one of spec.canary and spec.blueGreen must be set"),
		refusedPolicy("no-steps", "  canary:\n    steps: []\n", "spec.canary.steps", "at least 1 item"),
		refusedPolicy("weights-down", "  canary:\n    steps:\n      - setWeight: 50\n      - setWeight: 20\n", "setWeight must not decrease from one step to a later one"),
		refusedPolicy("weight-above-100", "  canary:\n    steps:\n      - setWeight: 150\n", "spec.canary.steps[0].setWeight", "less than or equal to 100"),
		refusedPolicy("pause-in-days", "  canary:\n    steps:\n      - pause: {duration: 1d}\n", "must be a duration in whole seconds, minutes or hours"),
		refusedPolicy("step-of-two-kinds", "  canary:\n    steps:\n      - setWeight: 10\n        pause: {}\n", "a step sets exactly one of setWeight, pause and analysis"),
		refusedPolicy("preview-is-active", "  blueGreen:\n    activeService: web\n    previewService: web\n", "previewService must differ from activeService"),
		refusedPolicy("branch-template-without-hash", canarySteps+"  git:\n    push:\n      promotionBranchTemplate: 'promote/{{.Step}}'\n",
			"the promotion branch template must use {{.Step}} and {{.Hash}}"),
		refusedPolicy("rollback-unknown", canarySteps+"  git:\n    rollback: undo\n", `spec.git.rollback`, `Unsupported value: "undo"`),
		refusedPolicy("policy-unknown-field", "  canary:\n    stepz:\n      - setWeight: 10\n", ".spec.canary.stepz", "field not declared in schema"),
		refusedPolicy("arg-of-two-kinds", "  canary:\n    steps:\n      - analysis:\n          templates:\n            - name: rate\n          args:\n            - name: a\n              value: x\n              valueFrom:\n                podTemplateHashValue: Stable\n",
			"an arg sets exactly one of value and valueFrom"),
		refusedDelivery("delivery-strategy", "  deploymentRef:\n    name: delivery-strategy\n  strategy: bluegreen\n", "spec.strategy", `Unsupported value: "bluegreen"`),
		refusedDelivery("delivery-negative-replicas", "  deploymentRef:\n    name: delivery-negative-replicas\n  strategy: canary\n  replicas: -1\n",
			"spec.replicas", "greater than or equal to 0"),
		refusedDelivery("delivery-without-deployment", "  strategy: canary\n", "spec.deploymentRef", "Required value"),

		// What Flux refuses to build or apply.
		refused("no-containers", map[string]string{"deployment.yaml": strings.Replace(
			caseDeployment(nsFlux, "no-containers", "sluice.dev/strategy: canary"),
			"      containers:\n        - name: no-containers\n          image: registry.example/no-containers:v1\n", "      containers: []\n", 1)},
			meta.ReconciliationFailedReason, "spec.template.spec.containers: Required value"),
		refused("anchors-bomb", map[string]string{"bomb.yaml": bomb}, meta.ReconciliationFailedReason, "ConfigMap/bi-flux/bomb"),
		refused("huge-file", map[string]string{"huge.yaml": fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\n  namespace: bi-flux\ndata:\n  blob: %s\n",
			strings.Repeat("x", 3<<19))}, meta.ReconciliationFailedReason, "ConfigMap/bi-flux/huge", "1048576 bytes"),
		refused("remote-base", map[string]string{"kustomization.yaml": "resources:\n  - namespace.yaml\n  - https://git.invalid/team/apps//web?ref=main\n"},
			meta.BuildFailedReason, "git.invalid"),
		refused("absolute-base", map[string]string{"kustomization.yaml": "resources:\n  - namespace.yaml\n  - /etc/kubernetes\n"},
			meta.BuildFailedReason, "/etc/kubernetes"),
		refused("base-outside-repository", map[string]string{"kustomization.yaml": "resources:\n  - namespace.yaml\n  - ../../../../../../../etc\n"},
			meta.BuildFailedReason, "../../../../../../../etc"),
		{name: "symlink-listed", files: map[string]string{
			"apps/flux/symlink-listed/namespace.yaml":     namespace(nsFlux),
			"apps/flux/symlink-listed/kustomization.yaml": "resources:\n  - namespace.yaml\n  - hosts.yaml\n"},
			symlinks:      map[string]string{"apps/flux/symlink-listed/hosts.yaml": "/etc/hosts"},
			kustomization: &caseKustomization{path: "./apps/flux/symlink-listed"},
			want:          fluxRefuses("bi-symlink-listed", meta.BuildFailedReason, "hosts.yaml")},

		// Symbolic links beside an annotated Deployment: Flux leaves them out
		// of its artifact; sluice does not write through them.
		{name: "symlinked-kustomization", files: map[string]string{
			"apps/links/kustomization-link/deployment.yaml": docs(namespace("bi-links"), caseDeployment("bi-links", "linked", "sluice.dev/strategy: canary")),
			"apps/links/shared/kustomization.yaml":          "resources:\n  - ../kustomization-link/deployment.yaml\n"},
			symlinks:      map[string]string{"apps/links/kustomization-link/kustomization.yaml": "../shared/kustomization.yaml"},
			kustomization: &caseKustomization{path: "./apps/links/kustomization-link"},
			want:          deploymentEvent("bi-links", "linked", "AdoptionFailed", "kustomization.yaml is a symbolic link; sluice writes only to regular files")},
		{name: "symlink-out-of-repository", files: map[string]string{
			"apps/links/outside/deployment.yaml": docs(namespace("bi-links-out"), caseDeployment("bi-links-out", "outside", "sluice.dev/strategy: canary"))},
			symlinks:      map[string]string{"apps/links/outside/passwd.yaml": "/etc/passwd"},
			kustomization: &caseKustomization{path: "./apps/links/outside"},
			want: deploymentEvent("bi-links-out", "outside", "AdoptionFailed",
				"apps/links/outside/passwd.yaml is a symbolic link, which Flux leaves out of what it applies")},

		// A Delivery a cluster user made with labels that say Flux applied
		// it.
		{name: "forged-flux-labels", create: func(g Gomega) {
			ctx := context.Background()
			g.Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsForged}})).To(Succeed())
			d := webDeployment(nsForged, "v1")
			d.Spec.Replicas = ptr.To[int32](1)
			g.Expect(k8sClient.Create(ctx, d)).To(Succeed())
			forged := webDelivery(nsForged, "")
			forged.Spec.PolicyRef, forged.Spec.Replicas = nil, ptr.To[int32](1)
			forged.Labels = map[string]string{"kustomize.toolkit.fluxcd.io/name": "badinput", "kustomize.toolkit.fluxcd.io/namespace": stack.FluxNamespace}
			g.Expect(k8sClient.Create(ctx, forged)).To(Succeed())
		}, want: signal{kind: deliveryv1.DeliveryKind, namespace: nsForged, name: "web", reason: "NotInInventory",
			messages: []string{"Kustomization flux-system/badinput", "did not apply it"}}},
	}
}

// TestBadInput pushes, in one commit beside an app sluice already
// delivers, dozens of things a user can get wrong, and makes Secrets and
// objects a cluster user can get wrong. For each the user sees the
// condition or event that says what to change; sluice pushes nothing to
// any branch, does not crash, and the delivered app's Rollout and pods
// stay as they were.
func TestBadInput(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	start := time.Now()
	cases := badInputs()

	// The app sluice delivers before anything goes wrong.
	repo := newGitRepo(t, "badinput")
	repo.write(map[string]string{"apps/main/healthy/app.yaml": webApp(nsHealthy, 2, "registry.example/web:v1", "sluice.dev/strategy: canary")})
	repo.commitAndPush("Add web")
	fluxSyncCustom(t, "badinput", "./apps/main", func(_ *sourcev1.GitRepository, ks *kustomizev1.Kustomization) {
		ks.Spec.Wait = false
		ks.Spec.PostBuild = &kustomizev1.PostBuild{Substitute: map[string]string{"CASE_REPLICAS": "1"}}
	})
	waitHealthy(g, nsHealthy, "web", 2)
	repo.git("", "pull", "--quiet", "origin", "main")
	g.Expect(repo.git("", "log", "--format=%s", "--author=sluice")).To(ContainSubstring("Promote bi-healthy/web"))
	rollout := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: nsHealthy, Name: "web"}})
	pods := podUIDs(g, nsHealthy)
	g.Expect(pods).To(HaveLen(2))
	t.Logf("web delivered in %s", time.Since(start).Round(time.Second))

	// What a cluster user makes: Secrets that are missing, forbidden or
	// half valid, and the RoleBinding that lets sluice read them.
	for _, ns := range []string{nsSecrets, nsForbidden} {
		g.Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	}
	g.Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsSecrets, Name: "sluice-secret-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "sluice-secret-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: stack.SluiceNamespace, Name: "sluice"}},
	})).To(Succeed())
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Namespace: nsForbidden, Name: "writer"},
			StringData: map[string]string{"username": env.Git.Username, "password": env.Git.Password}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: nsSecrets, Name: "other-keys"},
			StringData: map[string]string{"user": env.Git.Username, "pass": env.Git.Password}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: nsSecrets, Name: "wrong-password"},
			StringData: map[string]string{"username": env.Git.Username, "password": stack.RandomSecret()}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: nsSecrets, Name: "not-a-key"},
			StringData: map[string]string{"git.asc": "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PRIVATE KEY BLOCK-----\n"}},
	} {
		g.Expect(k8sClient.Create(ctx, s)).To(Succeed())
	}

	// Every bad input in one commit.
	files := map[string]string{"apps/main/namespaces.yaml": docs(namespace(nsAnnotations), namespace(nsTemplates), namespace(nsDeliveries))}
	for _, c := range cases {
		for p, content := range c.files {
			g.Expect(files).NotTo(HaveKey(p), "two cases write %s", p)
			files[p] = content
		}
	}
	repo.write(files)
	for _, c := range cases {
		for p, target := range c.symlinks {
			g.Expect(os.MkdirAll(filepath.Dir(filepath.Join(repo.dir, p)), 0o755)).To(Succeed())
			g.Expect(os.Symlink(target, filepath.Join(repo.dir, p))).To(Succeed())
		}
	}
	bad := repo.commitAndPush("Add what users get wrong")
	repo.git("", "tag", "v0.1.0")
	repo.git("", "push", "--quiet", "origin", "v0.1.0")
	heads := remoteHeads(repo)
	g.Expect(heads).To(Equal(bad + "\trefs/heads/main"))
	sluiceCommits := repo.git("", "log", "--all", "--format=%H", "--grep=^Sluice-Delivery: ")

	// Flux has the commit before the inputs' own Kustomizations look.
	g.Eventually(func(g Gomega) {
		src := getObj(g, &sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: stack.FluxNamespace, Name: "badinput"}})
		g.Expect(src.Status.Artifact).NotTo(BeNil())
		g.Expect(src.Status.Artifact.Revision).To(HaveSuffix(bad))
	}, time.Minute, 200*time.Millisecond).Should(Succeed())
	p := pins{tag: "v0.1.0", commit: bad}
	kustomizations := map[string]bool{}
	for _, c := range cases {
		if c.create != nil {
			c.create(g)
		}
		k := c.kustomization
		if k == nil || kustomizations[k.path] {
			continue
		}
		kustomizations[k.path] = true
		name := "bi-" + filepath.Base(k.path)
		// The scenarios after this one need not share the stack with
		// Kustomizations that keep failing.
		t.Cleanup(func() {
			for _, obj := range []client.Object{
				&kustomizev1.Kustomization{ObjectMeta: metav1.ObjectMeta{Namespace: stack.FluxNamespace, Name: name}},
				&sourcev1.GitRepository{ObjectMeta: metav1.ObjectMeta{Namespace: stack.FluxNamespace, Name: name}},
			} {
				if err := k8sClient.Delete(context.Background(), obj); client.IgnoreNotFound(err) != nil {
					t.Errorf("deleting %s: %v", name, err)
				}
			}
		})
		if k.source == nil {
			g.Expect(k8sClient.Create(ctx, caseKustomizationOf(name, "badinput", k))).To(Succeed())
			continue
		}
		fluxCreate(t, k8sClient, name, env.Git.RepositoryURL("badinput"), k.path, func(src *sourcev1.GitRepository, ks *kustomizev1.Kustomization) {
			k.source(src, p)
			ks.Spec.Wait = false
		})
	}

	// The user sees what to change, for every input.
	deadline := time.Now().Add(2 * time.Minute)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Eventually(func(g Gomega) {
				seen := c.want.seen(g)
				g.Expect(seen).To(ContainElement(And(containsAll(c.want.messages)...)), "%s", c.want)
			}, time.Until(deadline)+time.Second, 200*time.Millisecond).Should(Succeed())
		})
	}
	t.Logf("%d bad inputs signalled %s after the push", len(cases), time.Since(start).Round(time.Second))

	// Nothing reached Git, nothing running was disturbed, and sluice is
	// still up; a little while on, still so.
	g.Consistently(func(g Gomega) {
		g.Expect(remoteHeads(repo)).To(Equal(heads), "sluice pushed to a branch")
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: nsHealthy, Name: "web"}})
		g.Expect(r.Generation).To(Equal(rollout.Generation))
		g.Expect(equality.Semantic.DeepEqual(r.Spec, rollout.Spec)).To(BeTrue(), "the Rollout of web changed")
		g.Expect(r.Status.AvailableReplicas).To(BeEquivalentTo(2))
		g.Expect(podUIDs(g, nsHealthy)).To(Equal(pods))
		d := getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: nsHealthy, Name: "web"}})
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(conditions.IsReady(d)).To(BeTrue())
		g.Expect(env.SluiceRunning()).To(BeTrue(), "sluice exited")
		// A Delivery whose labels name a Kustomization that did not apply
		// it is never written for: sluice does not even try.
		g.Expect(events(g, deliveryv1.DeliveryKind, nsForged, "web", deliveryv1.GitCannotEditReason)).To(BeEmpty())
	}, 5*time.Second, 250*time.Millisecond).Should(Succeed())
	repo.git("", "fetch", "--quiet", "--tags", "origin")
	g.Expect(repo.git("", "log", "--all", "--format=%H", "--grep=^Sluice-Delivery: ")).To(Equal(sluiceCommits))

	// The Deployments of the inputs run as Git says: none was adopted or
	// scaled, and the stalled Deliveries made no Rollout.
	var rollouts rolloutsv1.RolloutList
	g.Expect(k8sClient.List(ctx, &rollouts, client.InNamespace(nsDeliveries))).To(Succeed())
	g.Expect(rollouts.Items).To(HaveLen(1))
	g.Expect(rollouts.Items[0].Name).To(Equal("rollout-of-another"))
	for _, ns := range []string{nsAnnotations, nsTemplates, nsDeliveries} {
		var list appsv1.DeploymentList
		g.Expect(k8sClient.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		g.Expect(list.Items).NotTo(BeEmpty())
		for _, d := range list.Items {
			g.Expect(d.Spec.Replicas).To(HaveValue(BeEquivalentTo(1)), "Deployment %s/%s", d.Namespace, d.Name)
		}
	}
	log, err := os.ReadFile(filepath.Join(env.LogDir(), "sluice.log"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(log)).NotTo(ContainSubstring("panic"))
	t.Logf("%d bad inputs in %s", len(cases), time.Since(start).Round(time.Second))
}

// caseKustomizationOf is a Kustomization name that applies k's path of
// GitRepository source, without waiting for what it applies.
func caseKustomizationOf(name, source string, k *caseKustomization) *kustomizev1.Kustomization {
	ks := &kustomizev1.Kustomization{
		ObjectMeta: metav1.ObjectMeta{Namespace: stack.FluxNamespace, Name: name},
		Spec: kustomizev1.KustomizationSpec{
			Interval:      metav1.Duration{Duration: time.Minute},
			RetryInterval: &metav1.Duration{Duration: time.Minute},
			Path:          k.path,
			Prune:         true,
			Timeout:       &metav1.Duration{Duration: time.Minute},
			SourceRef:     kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: source},
		},
	}
	return ks
}

// containsAll is a matcher for each of subs.
func containsAll(subs []string) []OmegaMatcher {
	out := make([]OmegaMatcher, 0, len(subs))
	for _, s := range subs {
		out = append(out, ContainSubstring(s))
	}
	return out
}

// podUIDs lists the pods of namespace by name, with their UIDs.
func podUIDs(g Gomega, namespace string) map[string]string {
	var list corev1.PodList
	g.Expect(k8sClient.List(context.Background(), &list, client.InNamespace(namespace))).To(Succeed())
	out := map[string]string{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out[p.Name] = string(p.UID)
		}
	}
	return out
}
