package controllers

import (
	"encoding/json"
	"maps"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

const (
	// templateHashAnnotation on the Rollout's pod template carries sluice's
	// hash of the Deployment template it was copied from, so that the
	// Rollout's ReplicaSets say which release they run.
	templateHashAnnotation = "delivery.sluice.dev/template-hash"

	// deliveryLabel names the Delivery an object belongs to.
	deliveryLabel = "delivery.sluice.dev/name"

	// gatewayAPIPlugin is the name of the Argo Rollouts Gateway API
	// traffic-router plugin (argoproj-labs/rollouts-plugin-trafficrouter-gatewayapi).
	gatewayAPIPlugin = "argoproj-labs/gatewayAPI"
)

// renderRollout returns the Rollout that runs template, whose hash is hash,
// for delivery with policy. The pod template is copied, not referenced with workloadRef, whose
// progressive scale-down only works for the first revision
// (argoproj/argo-rollouts#4935) and which KEDA cannot target (kedacore/keda#4344).
//
// Rendering is deterministic: the same inputs give the same Rollout, so an
// unchanged world applies nothing new.
func renderRollout(delivery *deliveryv1.Delivery, deployment *appsv1.Deployment,
	policy *deliveryv1.DeliveryPolicySpec, template *corev1.PodTemplateSpec, hash string) *rolloutsv1.Rollout {

	podTemplate := template.DeepCopy()
	annotations := maps.Clone(podTemplate.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[templateHashAnnotation] = hash
	podTemplate.Annotations = annotations

	return &rolloutsv1.Rollout{
		TypeMeta: metav1.TypeMeta{APIVersion: rolloutsv1.SchemeGroupVersion.String(), Kind: "Rollout"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      delivery.Name,
			Namespace: delivery.Namespace,
			Labels: map[string]string{
				"app.kubernetes.io/managed-by": "sluice",
				deliveryLabel:                  delivery.Name,
			},
			OwnerReferences: []metav1.OwnerReference{ownerReference(delivery)},
		},
		Spec: rolloutsv1.RolloutSpec{
			Replicas:                ptr.To(delivery.GetReplicas()),
			Selector:                deployment.Spec.Selector.DeepCopy(),
			Template:                *podTemplate,
			MinReadySeconds:         deployment.Spec.MinReadySeconds,
			RevisionHistoryLimit:    deployment.Spec.RevisionHistoryLimit,
			ProgressDeadlineSeconds: deployment.Spec.ProgressDeadlineSeconds,
			Paused:                  deployment.Spec.Paused,
			Strategy:                renderStrategy(policy, deployment.Spec.Strategy.RollingUpdate),
			RollbackWindow:          renderRollbackWindow(policy.RollbackWindow),
		},
	}
}

// renderRollbackWindow renders the policy's rollback window: Argo Rollouts
// skips the steps of a return to one of the revisions just before the
// stable one (it always skips them for a return to the stable one).
func renderRollbackWindow(w *deliveryv1.RollbackWindow) *rolloutsv1.RollbackWindowSpec {
	revisions := deliveryv1.DefaultRollbackWindowRevisions
	if w != nil {
		revisions = w.Revisions
	}
	if revisions == 0 {
		return nil
	}
	return &rolloutsv1.RollbackWindowSpec{Revisions: revisions}
}

// ownerReference makes the Delivery the controller of what sluice renders
// for it, so that the garbage collector removes it with the Delivery.
func ownerReference(delivery *deliveryv1.Delivery) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         deliveryv1.GroupVersion.String(),
		Kind:               deliveryv1.DeliveryKind,
		Name:               delivery.Name,
		UID:                delivery.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}

// renderStrategy renders the policy's strategy, replacing pods as the
// Deployment's rolling update would: its maxSurge and maxUnavailable bound
// how far a canary step may go above and below the serving replicas (a
// Deployment with maxUnavailable: 0 never runs fewer available pods).
func renderStrategy(policy *deliveryv1.DeliveryPolicySpec, rolling *appsv1.RollingUpdateDeployment) rolloutsv1.RolloutStrategy {
	var maxSurge, maxUnavailable *intstr.IntOrString
	if rolling != nil {
		maxSurge, maxUnavailable = rolling.MaxSurge, rolling.MaxUnavailable
	}
	if bg := policy.BlueGreen; bg != nil {
		// NOTE: a blue-green release runs the whole preview beside the
		// active pods; Argo's blue-green maxUnavailable only bounds
		// restarts, so the Deployment's has nothing to carry.
		return rolloutsv1.RolloutStrategy{BlueGreen: &rolloutsv1.BlueGreenStrategy{
			ActiveService:         bg.ActiveService,
			PreviewService:        bg.PreviewService,
			AutoPromotionEnabled:  bg.AutoPromotionEnabled,
			ScaleDownDelaySeconds: bg.ScaleDownDelaySeconds,
			PrePromotionAnalysis:  renderAnalysis(bg.PrePromotionAnalysis),
			PostPromotionAnalysis: renderAnalysis(bg.PostPromotionAnalysis),
		}}
	}

	c := policy.Canary
	canary := &rolloutsv1.CanaryStrategy{MaxSurge: maxSurge, MaxUnavailable: maxUnavailable}
	for _, step := range c.Steps {
		var out rolloutsv1.CanaryStep
		switch {
		case step.SetWeight != nil:
			out.SetWeight = ptr.To(*step.SetWeight)
		case step.Pause != nil:
			out.Pause = &rolloutsv1.RolloutPause{}
			if step.Pause.Duration != "" {
				out.Pause.Duration = ptr.To(intstr.FromString(step.Pause.Duration))
			}
		case step.Analysis != nil:
			out.Analysis = renderAnalysis(step.Analysis)
		}
		canary.Steps = append(canary.Steps, out)
	}
	if bg := c.BackgroundAnalysis; bg != nil {
		canary.Analysis = &rolloutsv1.RolloutAnalysisBackground{RolloutAnalysis: *renderAnalysis(bg)}
	}
	if r := c.TrafficRouting; r != nil && r.GatewayAPI != nil {
		canary.StableService = r.GatewayAPI.StableService
		canary.CanaryService = r.GatewayAPI.CanaryService
		config, err := json.Marshal(gatewayAPIConfig{HTTPRoute: r.GatewayAPI.HTTPRoute, Namespace: r.GatewayAPI.Namespace})
		if err != nil {
			panic(err) // two strings always marshal
		}
		canary.TrafficRouting = &rolloutsv1.RolloutTrafficRouting{
			Plugins: map[string]json.RawMessage{gatewayAPIPlugin: config},
		}
	}
	return rolloutsv1.RolloutStrategy{Canary: canary}
}

// gatewayAPIConfig is the Gateway API plugin's configuration block.
type gatewayAPIConfig struct {
	HTTPRoute string `json:"httpRoute"`
	Namespace string `json:"namespace,omitempty"`
}

func renderAnalysis(in *deliveryv1.Analysis) *rolloutsv1.RolloutAnalysis {
	if in == nil {
		return nil
	}
	out := &rolloutsv1.RolloutAnalysis{}
	for _, t := range in.Templates {
		ref := rolloutsv1.AnalysisTemplateRef{TemplateName: t.Name}
		if t.ClusterScope {
			ref.ClusterScope = ptr.To(true)
		}
		out.Templates = append(out.Templates, ref)
	}
	for _, a := range in.Args {
		arg := rolloutsv1.AnalysisRunArgument{Name: a.Name}
		if a.Value != nil {
			arg.Value = *a.Value
		}
		if vf := a.ValueFrom; vf != nil {
			arg.ValueFrom = &rolloutsv1.ArgumentValueFrom{}
			if vf.PodTemplateHashValue != nil {
				arg.ValueFrom.PodTemplateHashValue = ptr.To(rolloutsv1.ValueFromPodTemplateHash(*vf.PodTemplateHashValue))
			}
			if vf.FieldRef != nil {
				arg.ValueFrom.FieldRef = &rolloutsv1.FieldRef{FieldPath: vf.FieldRef.FieldPath}
			}
		}
		out.Args = append(out.Args, arg)
	}
	return out
}
