package controllers

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
)

// release is the template the Rollout should run now.
type release struct {
	// template to apply, with its hash; nil when the Rollout keeps what it
	// runs.
	template *corev1.PodTemplateSpec
	hash     string
	// intendedHash is the template the Delivery is Ready on.
	intendedHash string
	// rejected is set when the Deployment's template is rejected in spec
	// and therefore not released.
	rejected *deliveryv1.Rejection
}

// chooseTemplate decides which template the Rollout runs.
//
// The Deployment's template is released unless spec.promotion.rejection
// names it. A Rollout that does not exist yet starts from the stable
// template recorded in spec.promotion.stable (a rebuilt cluster) and the
// Deployment's template follows as a candidate once the stable one is
// healthy: the Rollout never jumps straight to an unpromoted template.
func chooseTemplate(obj *deliveryv1.Delivery, deployment *appsv1.Deployment,
	rollout *rolloutsv1.Rollout, policy *deliveryv1.DeliveryPolicySpec) (release, error) {

	desired := &deployment.Spec.Template
	desiredHash := deliveryv1.TemplateHash(desired)
	rel := release{intendedHash: desiredHash}
	if rej := obj.Spec.Promotion.Rejection; rej != nil && rej.TemplateHash == desiredHash {
		rel.rejected = rej
	}
	stable := obj.Spec.Promotion.Stable

	if rollout == nil {
		if stable != nil && stable.TemplateHash != desiredHash {
			t, err := stableTemplate(obj, deployment)
			if err != nil {
				return rel, err
			}
			rel.template, rel.hash = t, stable.TemplateHash
			if rel.rejected != nil {
				rel.intendedHash = stable.TemplateHash
			}
			return rel, nil
		}
		if rel.rejected != nil {
			return rel, stalled(deliveryv1.RejectedReason,
				"the Deployment's template %s was rejected and spec.promotion.stable names no other template to run", desiredHash)
		}
		rel.template, rel.hash = desired, desiredHash
		return rel, nil
	}

	view := viewRollout(rollout, policy)
	switch {
	case rel.rejected != nil:
		// Keep what runs: Argo keeps an aborted candidate's stable pods.
		rel.intendedHash = view.runningHash
		rel.template, rel.hash = rolloutTemplate(rollout), view.runningHash
	case stable != nil && view.runningHash == stable.TemplateHash && desiredHash != stable.TemplateHash && !view.healthy:
		// Stable first: wait until the stable template is healthy before
		// the candidate follows.
		rel.template, rel.hash = rolloutTemplate(rollout), view.runningHash
	default:
		rel.template, rel.hash = desired, desiredHash
	}
	return rel, nil
}

// stableTemplate rebuilds the stable template from the Deployment's and the
// images recorded in spec.promotion.stable, and checks that it is exactly
// the recorded one.
func stableTemplate(obj *deliveryv1.Delivery, deployment *appsv1.Deployment) (*corev1.PodTemplateSpec, error) {
	stable := obj.Spec.Promotion.Stable
	images := map[string]string{}
	for _, c := range stable.Images {
		images[c.Name] = c.Image
	}
	t := withImages(&deployment.Spec.Template, images)
	if got := deliveryv1.TemplateHash(t); got != stable.TemplateHash {
		return nil, stalled(deliveryv1.StableTemplateMismatchReason,
			"spec.promotion.stable: template %s cannot be rebuilt from Deployment %s with spec.promotion.stable.images (got %s): the templates differ in more than images",
			stable.TemplateHash, deployment.Name, got)
	}
	return t, nil
}

// rolloutTemplate returns the Rollout's pod template as sluice rendered it,
// without the template-hash annotation.
func rolloutTemplate(rollout *rolloutsv1.Rollout) *corev1.PodTemplateSpec {
	t := rollout.Spec.Template.DeepCopy()
	delete(t.Annotations, templateHashAnnotation)
	if len(t.Annotations) == 0 {
		t.Annotations = nil
	}
	return t
}

// getRollout returns the Delivery's Rollout, or nil when there is none.
func (r *DeliveryReconciler) getRollout(ctx context.Context, obj *deliveryv1.Delivery) (*rolloutsv1.Rollout, error) {
	rollout := &rolloutsv1.Rollout{}
	if err := r.Get(ctx, client.ObjectKeyFromObject(obj), rollout); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("getting Rollout: %w", err)
	}
	if !metav1.IsControlledBy(rollout, obj) {
		return nil, stalled(deliveryv1.RolloutConflictReason,
			"a Rollout named %s exists in namespace %s and does not belong to this Delivery; rename or remove it", obj.Name, obj.Namespace)
	}
	return rollout, nil
}

// applyRollout server-side applies the rendered Rollout with sluice's field
// manager, unless the live one already says all of it.
func (r *DeliveryReconciler) applyRollout(ctx context.Context, desired, live *rolloutsv1.Rollout) (*rolloutsv1.Rollout, error) {
	if rolloutUpToDate(desired, live) {
		return live, nil
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(desired)
	if err != nil {
		return nil, err
	}
	delete(u, "status")
	answer := &unstructured.Unstructured{Object: u}
	if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(answer),
		client.FieldOwner(r.ControllerName), client.ForceOwnership); err != nil {
		return nil, fmt.Errorf("applying Rollout: %w", err)
	}
	// NOTE: the API server's answer, not the cache, which may not hold a
	// Rollout created a moment ago yet.
	applied := &rolloutsv1.Rollout{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(answer.Object, applied); err != nil {
		return nil, fmt.Errorf("reading the applied Rollout: %w", err)
	}
	return applied, nil
}

// rolloutUpToDate tells whether live already says everything desired says.
//
// NOTE: a field rendered unset passes DeepDerivative whatever the live one
// says; the rollback window is the one sluice renders unset to take it
// away.
func rolloutUpToDate(desired, live *rolloutsv1.Rollout) bool {
	return live != nil && equality.Semantic.DeepDerivative(desired.Spec, live.Spec) &&
		equality.Semantic.DeepDerivative(desired.Labels, live.Labels) &&
		(desired.Spec.RollbackWindow == nil) == (live.Spec.RollbackWindow == nil)
}

// checkReferences checks that the Services, HTTPRoute and AnalysisTemplates
// the policy names exist, naming the policy field that refers to a missing
// one.
func (r *DeliveryReconciler) checkReferences(ctx context.Context, namespace string, policy *deliveryv1.DeliveryPolicySpec) error {
	type ref struct {
		field, kind string
		obj         client.Object
		key         client.ObjectKey
	}
	var refs []ref
	httpRoute := func(field string, g *deliveryv1.GatewayAPIRouting) {
		route := &unstructured.Unstructured{}
		route.SetGroupVersionKind(httpRouteKind)
		refs = append(refs, ref{field, "HTTPRoute", route, client.ObjectKey{Namespace: cmp.Or(g.Namespace, namespace), Name: g.HTTPRoute}})
	}
	service := func(field, name string) {
		if name != "" {
			refs = append(refs, ref{field, "Service", &corev1.Service{}, client.ObjectKey{Namespace: namespace, Name: name}})
		}
	}
	analysis := func(field string, a *deliveryv1.Analysis) {
		if a == nil {
			return
		}
		for i, t := range a.Templates {
			f := fmt.Sprintf("%s.templates[%d].name", field, i)
			if t.ClusterScope {
				refs = append(refs, ref{f, "ClusterAnalysisTemplate", &rolloutsv1.ClusterAnalysisTemplate{}, client.ObjectKey{Name: t.Name}})
			} else {
				refs = append(refs, ref{f, "AnalysisTemplate", &rolloutsv1.AnalysisTemplate{}, client.ObjectKey{Namespace: namespace, Name: t.Name}})
			}
		}
	}
	if c := policy.Canary; c != nil {
		if g := c.TrafficRouting; g != nil && g.GatewayAPI != nil {
			service("spec.canary.trafficRouting.gatewayAPI.stableService", g.GatewayAPI.StableService)
			service("spec.canary.trafficRouting.gatewayAPI.canaryService", g.GatewayAPI.CanaryService)
			httpRoute("spec.canary.trafficRouting.gatewayAPI.httpRoute", g.GatewayAPI)
		}
		analysis("spec.canary.backgroundAnalysis", c.BackgroundAnalysis)
		for i, s := range c.Steps {
			analysis(fmt.Sprintf("spec.canary.steps[%d].analysis", i), s.Analysis)
		}
	}
	if bg := policy.BlueGreen; bg != nil {
		service("spec.blueGreen.activeService", bg.ActiveService)
		service("spec.blueGreen.previewService", bg.PreviewService)
		analysis("spec.blueGreen.prePromotionAnalysis", bg.PrePromotionAnalysis)
		analysis("spec.blueGreen.postPromotionAnalysis", bg.PostPromotionAnalysis)
	}
	for _, ref := range refs {
		if err := r.APIReader.Get(ctx, ref.key, ref.obj); err != nil {
			if apierrors.IsNotFound(err) {
				return stalled(deliveryv1.InvalidPolicyReason, "%s: %s %s not found", ref.field, ref.kind, ref.key.Name)
			}
			if meta.IsNoMatchError(err) {
				return stalled(deliveryv1.InvalidPolicyReason, "%s: %s %s not found: the cluster has no %s API", ref.field, ref.kind, ref.key.Name, ref.kind)
			}
			return fmt.Errorf("checking %s: %w", ref.field, err)
		}
	}
	return nil
}

// httpRouteKind is the Gateway API's HTTPRoute, whose weights the Gateway API
// plugin sets.
var httpRouteKind = schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"}

// switchedServices are the Services whose selectors Argo Rollouts switches
// for the policy.
func switchedServices(policy *deliveryv1.DeliveryPolicySpec) []string {
	var out []string
	add := func(names ...string) {
		for _, n := range names {
			if n != "" {
				out = append(out, n)
			}
		}
	}
	if c := policy.Canary; c != nil && c.TrafficRouting != nil && c.TrafficRouting.GatewayAPI != nil {
		add(c.TrafficRouting.GatewayAPI.StableService, c.TrafficRouting.GatewayAPI.CanaryService)
	}
	if bg := policy.BlueGreen; bg != nil {
		add(bg.ActiveService, bg.PreviewService)
	}
	return out
}

// switchedObjects are what Argo Rollouts writes to for the policy and Flux
// would put back: the Services whose selectors it switches and the
// HTTPRoute whose weights it sets.
func switchedObjects(policy *deliveryv1.DeliveryPolicySpec) []gitops.ObjectID {
	var out []gitops.ObjectID
	for _, name := range switchedServices(policy) {
		out = append(out, gitops.ObjectID{Kind: "Service", Name: name})
	}
	if c := policy.Canary; c != nil && c.TrafficRouting != nil && c.TrafficRouting.GatewayAPI != nil && c.TrafficRouting.GatewayAPI.HTTPRoute != "" {
		gw := c.TrafficRouting.GatewayAPI
		out = append(out, gitops.ObjectID{Kind: "HTTPRoute", Namespace: gw.Namespace, Name: gw.HTTPRoute})
	}
	return out
}

// promote lets the Rollout past the gate it waits at, with the status
// patch of `kubectl argo rollouts promote`: it clears the pause conditions
// and, past a step whose analysis was inconclusive, also Argo's own pause
// and moves on to the next step (Argo would otherwise run that analysis
// again).
func (r *DeliveryReconciler) promote(ctx context.Context, rollout *rolloutsv1.Rollout, view rolloutView) error {
	body := `{"status":{"pauseConditions":null}}`
	if view.inconclusiveStep && rollout.Status.ControllerPause && rollout.Status.CurrentStepIndex != nil {
		next := *rollout.Status.CurrentStepIndex
		if int(next) < len(rollout.Spec.Strategy.Canary.Steps) {
			next++
		}
		// NOTE: the step is computed from what sluice read; the
		// resourceVersion makes the API server refuse the patch when Argo
		// has moved on since, so that a step is never skipped twice.
		body = fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"status":{"pauseConditions":null,"controllerPause":false,"currentStepIndex":%d}}`,
			rollout.ResourceVersion, next)
	}
	if err := r.Status().Patch(ctx, rollout, client.RawPatch(types.MergePatchType, []byte(body))); err != nil {
		return fmt.Errorf("promoting Rollout %s: %w", rollout.Name, err)
	}
	return nil
}

// abort stops the Rollout's candidate and scales the stable pods back up,
// with the status patch of `kubectl argo rollouts abort`. The Rollout's
// template stays the candidate's, as with Argo's own abort.
func (r *DeliveryReconciler) abort(ctx context.Context, rollout *rolloutsv1.Rollout) error {
	patch := client.RawPatch(types.MergePatchType, []byte(`{"status":{"abort":true}}`))
	if err := r.Status().Patch(ctx, rollout, patch); err != nil {
		return fmt.Errorf("aborting Rollout %s: %w", rollout.Name, err)
	}
	return nil
}

// retry lets an aborted Rollout roll its candidate again from the first
// step, with the status patch of `kubectl argo rollouts retry`.
func (r *DeliveryReconciler) retry(ctx context.Context, rollout *rolloutsv1.Rollout) error {
	patch := client.RawPatch(types.MergePatchType, []byte(`{"status":{"abort":false}}`))
	if err := r.Status().Patch(ctx, rollout, patch); err != nil {
		return fmt.Errorf("retrying Rollout %s: %w", rollout.Name, err)
	}
	return nil
}

// inconclusiveAnalysis describes the AnalysisRun named name: each metric's
// phase and its last measurements, for the person who decides whether the
// candidate goes on.
func (r *DeliveryReconciler) inconclusiveAnalysis(ctx context.Context, namespace, name string) string {
	if name == "" {
		return "the analysis was inconclusive"
	}
	run := &rolloutsv1.AnalysisRun{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, run); err != nil {
		return fmt.Sprintf("AnalysisRun %s was inconclusive", name)
	}
	return fmt.Sprintf("AnalysisRun %s was inconclusive: %s", name, describeMetrics(run))
}

// describeMetrics says, for each metric of run, its phase and its last
// measured values (at most five).
func describeMetrics(run *rolloutsv1.AnalysisRun) string {
	var parts []string
	for _, m := range run.Status.MetricResults {
		var values []string
		measurements := m.Measurements
		if len(measurements) > 5 {
			measurements = measurements[len(measurements)-5:]
		}
		for _, v := range measurements {
			value := v.Value
			if value == "" {
				value = string(v.Phase)
			}
			values = append(values, value)
		}
		part := fmt.Sprintf("metric %s %s", m.Name, m.Phase)
		if len(values) > 0 {
			part += fmt.Sprintf(" (measured %s)", strings.Join(values, ", "))
		}
		if m.Message != "" {
			part += ": " + m.Message
		}
		parts = append(parts, part)
	}
	if len(parts) == 0 {
		return "no metric results"
	}
	return strings.Join(parts, "; ")
}

// failedAnalysis returns the AnalysisRun that failed the Rollout's current
// template and its first failed metric. Argo may already have cleared the
// run from the Rollout's status, so without a name from there it looks for
// the newest failed run of the current template.
func (r *DeliveryReconciler) failedAnalysis(ctx context.Context, rollout *rolloutsv1.Rollout, name string) (string, string) {
	var run *rolloutsv1.AnalysisRun
	if name != "" {
		run = &rolloutsv1.AnalysisRun{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: rollout.Namespace, Name: name}, run); err != nil {
			return name, ""
		}
	} else {
		var runs rolloutsv1.AnalysisRunList
		if err := r.APIReader.List(ctx, &runs, client.InNamespace(rollout.Namespace),
			client.MatchingLabels{rolloutsv1.DefaultRolloutUniqueLabelKey: rollout.Status.CurrentPodHash}); err != nil {
			return "", ""
		}
		for i := range runs.Items {
			ar := &runs.Items[i]
			if !metav1.IsControlledBy(ar, rollout) || !ar.Status.Phase.Completed() || ar.Status.Phase == rolloutsv1.AnalysisPhaseSuccessful {
				continue
			}
			if run == nil || run.CreationTimestamp.Before(&ar.CreationTimestamp) {
				run = ar
			}
		}
		if run == nil {
			return "", ""
		}
	}
	for _, m := range run.Status.MetricResults {
		if m.Phase == rolloutsv1.AnalysisPhaseFailed || m.Phase == rolloutsv1.AnalysisPhaseError {
			return run.Name, m.Name
		}
	}
	return run.Name, ""
}

// autoscaled tells whether a HorizontalPodAutoscaler targets the Delivery's
// Rollout. KEDA ScaledObjects scale through such an HPA too.
func (r *DeliveryReconciler) autoscaled(ctx context.Context, obj *deliveryv1.Delivery) (bool, error) {
	var hpas autoscalingv2.HorizontalPodAutoscalerList
	if err := r.APIReader.List(ctx, &hpas, client.InNamespace(obj.Namespace)); err != nil {
		return false, fmt.Errorf("listing HorizontalPodAutoscalers: %w", err)
	}
	for _, h := range hpas.Items {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind == "Rollout" && ref.Name == obj.Name && strings.HasPrefix(ref.APIVersion, rolloutsv1.SchemeGroupVersion.Group+"/") {
			return true, nil
		}
	}
	return false, nil
}
