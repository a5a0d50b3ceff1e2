package controllers

import (
	"context"
	"strconv"
	"testing"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// No Argo Rollouts controller runs in this suite: the tests write the
// Rollout's status the way Argo does, to check what sluice makes of it.
// The end-to-end suite runs the same behaviours against the real
// controller.

// setRolloutStatus writes the Rollout's status as Argo Rollouts would,
// marking the current generation observed.
func setRolloutStatus(g Gomega, d *deliveryv1.Delivery, mutate func(*rolloutsv1.Rollout)) {
	g.Eventually(func(g Gomega) {
		r := getRollout(g, d)
		g.Expect(r).NotTo(BeNil())
		r.Status.ObservedGeneration = strconv.FormatInt(r.Generation, 10)
		mutate(r)
		g.Expect(k8sClient.Status().Update(context.Background(), r)).To(Succeed())
	}, timeout).Should(Succeed())
}

// healthy marks the Rollout healthy on its current template.
func healthy(hash string) func(*rolloutsv1.Rollout) {
	return func(r *rolloutsv1.Rollout) {
		r.Status.Phase = rolloutsv1.RolloutPhaseHealthy
		r.Status.AvailableReplicas = *r.Spec.Replicas
		r.Status.CurrentPodHash, r.Status.StableRS = hash, hash
		r.Status.PauseConditions, r.Status.Abort, r.Status.CurrentStepIndex = nil, false, nil
	}
}

// startHealthy creates a Deployment and a Delivery and plays Argo making the
// first Rollout revision healthy.
func startHealthy(t *testing.T, g Gomega, ns string, policy *deliveryv1.DeliveryPolicy) (*deliveryv1.Delivery, *appsv1.Deployment) {
	t.Helper()
	ctx := context.Background()
	deployment := newDeployment(ns, "web")
	g.Expect(k8sClient.Create(ctx, deployment)).To(Succeed())
	name := ""
	if policy != nil {
		g.Expect(k8sClient.Create(ctx, policy)).To(Succeed())
		name = policy.Name
	}
	delivery := newDelivery(ns, "web", deliveryv1.StrategyCanary, name)
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())
	setRolloutStatus(g, delivery, healthy("stable1"))
	g.Eventually(func(g Gomega) deliveryv1.DeliveryPhase { return getDelivery(g, delivery).Status.Phase }, timeout).
		Should(Equal(deliveryv1.PhaseHealthy))
	return delivery, deployment
}

// releaseImage sets the Deployment's image, as Flux applies a new one, waits
// until the Rollout has it, and returns the candidate template's hash.
func releaseImage(g Gomega, delivery *deliveryv1.Delivery, deployment *appsv1.Deployment, image string) string {
	d := getDeployment(g, deployment)
	update(g, d, func() {
		d.Spec.Template.Spec.Containers[0].Image = image
	})
	g.Eventually(func(g Gomega) string {
		return getRollout(g, delivery).Spec.Template.Spec.Containers[0].Image
	}, timeout).Should(Equal(image))
	return deliveryv1.TemplateHash(&d.Spec.Template)
}

func getDeployment(g Gomega, d *appsv1.Deployment) *appsv1.Deployment {
	got := &appsv1.Deployment{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(d), got)).To(Succeed())
	return got
}

func TestEngine_Handover(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	deployment := newDeployment(ns, "web")
	g.Expect(k8sClient.Create(ctx, deployment)).To(Succeed())
	delivery := newDelivery(ns, "web", deliveryv1.StrategyCanary, "")
	delivery.Spec.Replicas = ptr.To[int32](3)
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())

	// The Rollout copies the Deployment's template, with the Delivery's
	// replicas, owned by the Delivery.
	var rollout *rolloutsv1.Rollout
	g.Eventually(func(g Gomega) { rollout = getRollout(g, delivery); g.Expect(rollout).NotTo(BeNil()) }, timeout).Should(Succeed())
	g.Expect(rollout.Spec.Replicas).To(HaveValue(BeEquivalentTo(3)))
	g.Expect(rollout.Spec.Template.Spec.Containers[0].Image).To(Equal("registry.example/app:v1"))
	g.Expect(rollout.Spec.Template.Annotations[templateHashAnnotation]).To(Equal(deliveryv1.TemplateHash(&getDeployment(g, deployment).Spec.Template)))
	g.Expect(metav1.IsControlledBy(rollout, getDelivery(g, delivery))).To(BeTrue())

	// sluice co-owns the Deployment's replicas before the handover, so the
	// field survives leaving Git.
	g.Eventually(func(g Gomega) bool { return ownsReplicas(getDeployment(g, deployment), "sluice") }, timeout).Should(BeTrue())

	// Until the Rollout has all its replicas, the Deployment keeps serving.
	setRolloutStatus(g, delivery, func(r *rolloutsv1.Rollout) {
		r.Status.Phase = rolloutsv1.RolloutPhaseProgressing
		r.Status.AvailableReplicas = 2
	})
	g.Eventually(func(g Gomega) string {
		return conditions.GetMessage(getDelivery(g, delivery), meta.ReconcilingCondition)
	}, timeout).Should(Equal("the Rollout has 2 of 3 replicas available; Deployment web keeps serving until it has all"))
	g.Consistently(func(g Gomega) {
		g.Expect(getDeployment(g, deployment).Spec.Replicas).To(HaveValue(BeEquivalentTo(2)))
		g.Expect(getDelivery(g, delivery).Status.Phase).To(Equal(deliveryv1.PhaseHandover))
	}, "2s").Should(Succeed())

	setRolloutStatus(g, delivery, healthy("stable1"))
	g.Eventually(func(g Gomega) {
		g.Expect(getDeployment(g, deployment).Spec.Replicas).To(HaveValue(BeEquivalentTo(0)))
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(conditions.IsReady(got)).To(BeTrue())
		g.Expect(got.Status.StableTemplateHash).To(Equal(rollout.Spec.Template.Annotations[templateHashAnnotation]))
	}, timeout).Should(Succeed())
	statusChecker().WithT(g).CheckErr(ctx, getDelivery(g, delivery))
}

func TestEngine_ReleaseGateAndApproval(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	delivery, deployment := startHealthy(t, g, ns, newCanaryPolicy(ns, "gate"))
	stable := getDelivery(g, delivery).Status.StableTemplateHash

	// Flux applies a new image: the Rollout gets the new template.
	candidate := releaseImage(g, delivery, deployment, "registry.example/app:v2")

	// Argo pauses at the manual gate (step 1 of the policy).
	setRolloutStatus(g, delivery, func(r *rolloutsv1.Rollout) {
		r.Status.Phase = rolloutsv1.RolloutPhasePaused
		r.Status.CurrentPodHash = "candidate1"
		r.Status.CurrentStepIndex = ptr.To[int32](1)
		r.Status.ControllerPause = true
		r.Status.PauseConditions = []rolloutsv1.PauseCondition{{Reason: rolloutsv1.PauseReasonCanaryPauseStep, StartTime: metav1.Now()}}
	})
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(got.Status.CandidateTemplateHash).To(Equal(candidate))
		g.Expect(got.Status.StableTemplateHash).To(Equal(stable))
		g.Expect(got.Status.CurrentStep).To(HaveValue(BeEquivalentTo(1)))
		g.Expect(got.Status.CanaryWeight).To(HaveValue(BeEquivalentTo(20)))
		g.Expect(conditions.GetReason(got, meta.ReconcilingCondition)).To(Equal(deliveryv1.WaitingForApprovalReason))
	}, timeout).Should(Succeed())
	statusChecker().WithT(g).CheckErr(ctx, getDelivery(g, delivery))

	// An approval for another candidate does nothing.
	got := getDelivery(g, delivery)
	update(g, got, func() {
		got.Spec.Promotion.Approvals = []deliveryv1.Approval{{TemplateHash: "0000000000", Step: 1}}
	})
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(conditions.GetReason(got, meta.ReconcilingCondition)).To(Equal(deliveryv1.ApprovalMismatchReason))
		g.Expect(conditions.GetMessage(got, meta.ReconcilingCondition)).To(ContainSubstring(
			"approves template 0000000000 at step 1, not the candidate " + candidate + " waiting at step 1"))
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
	}, timeout).Should(Succeed())
	g.Eventually(func(g Gomega) []string { return warningEvents(g, delivery) }, timeout).
		Should(ContainElement(deliveryv1.ApprovalMismatchReason))
	g.Expect(getRollout(g, delivery).Status.PauseConditions).To(HaveLen(1))

	// The approval for the candidate at its gate clears the pause, as the
	// Argo CLI's promote does.
	got = getDelivery(g, delivery)
	update(g, got, func() {
		got.Spec.Promotion.Approvals = []deliveryv1.Approval{{TemplateHash: candidate, Step: 1}}
	})
	g.Eventually(func(g Gomega) []rolloutsv1.PauseCondition {
		return getRollout(g, delivery).Status.PauseConditions
	}, timeout).Should(BeEmpty())

	setRolloutStatus(g, delivery, healthy("candidate1"))
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(got.Status.StableTemplateHash).To(Equal(candidate))
		g.Expect(got.Status.CandidateTemplateHash).To(BeEmpty())
		g.Expect(conditions.IsTrue(got, deliveryv1.PromotedCondition)).To(BeTrue())
	}, timeout).Should(Succeed())
}

func TestEngine_AbortAndRecordedRejection(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	delivery, deployment := startHealthy(t, g, ns, newCanaryPolicy(ns, "gate"))
	stable := getDelivery(g, delivery).Status.StableTemplateHash

	candidate := releaseImage(g, delivery, deployment, "registry.example/app:bad")

	setRolloutStatus(g, delivery, func(r *rolloutsv1.Rollout) {
		r.Status.Phase = rolloutsv1.RolloutPhaseDegraded
		r.Status.Abort = true
		r.Status.CurrentPodHash = "bad1"
		r.Status.Message = "RolloutAborted: metric error-rate assessed Failed"
		r.Status.Canary.CurrentStepAnalysisRunStatus = &rolloutsv1.RolloutAnalysisRunStatus{
			Name: "web-bad1-2", Status: rolloutsv1.AnalysisPhaseFailed,
		}
	})
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseRejected))
		g.Expect(conditions.IsStalled(got)).To(BeTrue())
		g.Expect(conditions.IsFalse(got, meta.ReadyCondition)).To(BeTrue())
		g.Expect(conditions.GetMessage(got, meta.StalledCondition)).To(Equal(
			"template " + candidate + " rejected, the Rollout runs the stable template " + stable +
				": AnalysisRun web-bad1-2 failed: RolloutAborted: metric error-rate assessed Failed"))
	}, timeout).Should(Succeed())
	statusChecker().WithT(g).CheckErr(ctx, getDelivery(g, delivery))
	g.Eventually(func(g Gomega) []string { return warningEvents(g, delivery) }, timeout).Should(ContainElement(deliveryv1.RejectedReason))

	// Git records the rejection; the rejected template is not released
	// again, even when the Rollout starts over (a rebuilt cluster).
	got := getDelivery(g, delivery)
	update(g, got, func() {
		got.Spec.Promotion.Rejection = &deliveryv1.Rejection{TemplateHash: candidate, Reason: "error-rate too high"}
		got.Spec.Promotion.Stable = &deliveryv1.StableRelease{
			TemplateHash: stable,
			Images:       []deliveryv1.ContainerImage{{Name: "app", Image: "registry.example/app:v1"}},
		}
	})
	g.Expect(k8sClient.Delete(ctx, getRollout(g, delivery))).To(Succeed())
	g.Eventually(func(g Gomega) {
		r := getRollout(g, delivery)
		g.Expect(r).NotTo(BeNil())
		g.Expect(r.Spec.Template.Spec.Containers[0].Image).To(Equal("registry.example/app:v1"))
	}, timeout).Should(Succeed())
	setRolloutStatus(g, delivery, healthy("stable1"))
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseRejected))
		g.Expect(conditions.GetMessage(got, meta.StalledCondition)).To(ContainSubstring(
			"the Deployment's template " + candidate + " was rejected (error-rate too high)"))
	}, timeout).Should(Succeed())
	g.Consistently(func(g Gomega) string {
		return getRollout(g, delivery).Spec.Template.Spec.Containers[0].Image
	}, "2s").Should(Equal("registry.example/app:v1"))
}

func TestEngine_StableFirstStart(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	deployment := newDeployment(ns, "web")
	deployment.Spec.Template.Spec.Containers[0].Image = "registry.example/app:v2"
	g.Expect(k8sClient.Create(ctx, deployment)).To(Succeed())
	v1 := getDeployment(g, deployment).Spec.Template.DeepCopy()
	v1.Spec.Containers[0].Image = "registry.example/app:v1"

	delivery := newDelivery(ns, "web", deliveryv1.StrategyCanary, "")
	delivery.Spec.Promotion.Stable = &deliveryv1.StableRelease{
		TemplateHash: deliveryv1.TemplateHash(v1),
		Images:       []deliveryv1.ContainerImage{{Name: "app", Image: "registry.example/app:v1"}},
	}
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())

	// The Rollout starts at the stable template and stays there until it is
	// healthy.
	g.Eventually(func(g Gomega) string {
		r := getRollout(g, delivery)
		g.Expect(r).NotTo(BeNil())
		return r.Spec.Template.Spec.Containers[0].Image
	}, timeout).Should(Equal("registry.example/app:v1"))
	setRolloutStatus(g, delivery, func(r *rolloutsv1.Rollout) {
		r.Status.Phase = rolloutsv1.RolloutPhaseProgressing
		r.Status.AvailableReplicas = 1
	})
	g.Consistently(func(g Gomega) string {
		return getRollout(g, delivery).Spec.Template.Spec.Containers[0].Image
	}, "2s").Should(Equal("registry.example/app:v1"))

	// Once it is, the Deployment's template follows as a candidate.
	setRolloutStatus(g, delivery, healthy("stable1"))
	g.Eventually(func(g Gomega) string {
		return getRollout(g, delivery).Spec.Template.Spec.Containers[0].Image
	}, timeout).Should(Equal("registry.example/app:v2"))
	g.Eventually(func(g Gomega) string { return getDelivery(g, delivery).Status.StableTemplateHash }, timeout).
		Should(Equal(deliveryv1.TemplateHash(v1)))
}

func TestEngine_StableThatCannotBeRebuilt(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	g.Expect(k8sClient.Create(ctx, newDeployment(ns, "web"))).To(Succeed())
	delivery := newDelivery(ns, "web", deliveryv1.StrategyCanary, "")
	delivery.Spec.Promotion.Stable = &deliveryv1.StableRelease{
		TemplateHash: "0123456789",
		Images:       []deliveryv1.ContainerImage{{Name: "app", Image: "registry.example/app:v0"}},
	}
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(conditions.IsStalled(got)).To(BeTrue())
		g.Expect(conditions.GetMessage(got, meta.StalledCondition)).To(HavePrefix(
			"spec.promotion.stable: template 0123456789 cannot be rebuilt from Deployment web"))
	}, timeout).Should(Succeed())
	g.Expect(getRollout(g, delivery)).To(BeNil())
}

func TestEngine_PolicyNamesWhatDoesNotExist(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		spec    deliveryv1.DeliveryPolicySpec
		message string
	}{
		{
			name: "gateway Service",
			spec: deliveryv1.DeliveryPolicySpec{Canary: &deliveryv1.CanaryStrategy{
				Steps: []deliveryv1.CanaryStep{{SetWeight: ptr.To[int32](10)}},
				TrafficRouting: &deliveryv1.TrafficRouting{GatewayAPI: &deliveryv1.GatewayAPIRouting{
					HTTPRoute: "web", StableService: "web-stable", CanaryService: "web-canary"}},
			}},
			message: "spec.canary.trafficRouting.gatewayAPI.stableService: Service web-stable not found",
		},
		{
			name: "analysis template",
			spec: deliveryv1.DeliveryPolicySpec{Canary: &deliveryv1.CanaryStrategy{
				Steps: []deliveryv1.CanaryStep{{SetWeight: ptr.To[int32](10)}, {Analysis: &deliveryv1.Analysis{
					Templates: []deliveryv1.AnalysisTemplateRef{{Name: "success-rate"}}}}},
			}},
			message: "spec.canary.steps[1].analysis.templates[0].name: AnalysisTemplate success-rate not found",
		},
		{
			name:    "blue-green active Service",
			spec:    deliveryv1.DeliveryPolicySpec{BlueGreen: &deliveryv1.BlueGreenStrategy{ActiveService: "web"}},
			message: "spec.blueGreen.activeService: Service web not found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			ns := newNamespace(t)
			deployment := newDeployment(ns, "web")
			g.Expect(k8sClient.Create(ctx, deployment)).To(Succeed())
			policy := &deliveryv1.DeliveryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p"}, Spec: tt.spec}
			g.Expect(k8sClient.Create(ctx, policy)).To(Succeed())
			strategy := deliveryv1.StrategyCanary
			if tt.spec.BlueGreen != nil {
				strategy = deliveryv1.StrategyBlueGreen
			}
			delivery := newDelivery(ns, "web", strategy, "p")
			g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())

			g.Eventually(func(g Gomega) {
				got := getDelivery(g, delivery)
				g.Expect(conditions.GetReason(got, meta.StalledCondition)).To(Equal(deliveryv1.InvalidPolicyReason))
				g.Expect(conditions.GetMessage(got, meta.StalledCondition)).To(Equal(tt.message))
			}, timeout).Should(Succeed())
			g.Eventually(func(g Gomega) []string { return warningEvents(g, delivery) }, timeout).
				Should(ContainElement(deliveryv1.InvalidPolicyReason))
			// Nothing that runs is touched.
			g.Expect(getRollout(g, delivery)).To(BeNil())
			g.Expect(getDeployment(g, deployment).Spec.Replicas).To(HaveValue(BeEquivalentTo(2)))
		})
	}
}

func TestEngine_HandBack(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	delivery, deployment := startHealthy(t, g, ns, nil)
	g.Eventually(func(g Gomega) *int32 { return getDeployment(g, deployment).Spec.Replicas }, timeout).
		Should(HaveValue(BeEquivalentTo(0)))

	g.Expect(k8sClient.Delete(ctx, getDelivery(g, delivery))).To(Succeed())

	// The Deployment is scaled up, and the Rollout stays until the
	// Deployment has its replicas available.
	g.Eventually(func(g Gomega) *int32 { return getDeployment(g, deployment).Spec.Replicas }, timeout).
		Should(HaveValue(BeEquivalentTo(2)))
	g.Eventually(func(g Gomega) deliveryv1.DeliveryPhase { return getDelivery(g, delivery).Status.Phase }, timeout).
		Should(Equal(deliveryv1.PhaseHandingBack))
	g.Consistently(func(g Gomega) {
		g.Expect(getRollout(g, delivery)).NotTo(BeNil())
		g.Expect(getDelivery(g, delivery).Status.Phase).To(Equal(deliveryv1.PhaseHandingBack))
	}, "2s").Should(Succeed())

	// The Deployment controller reports the replicas available.
	d := getDeployment(g, deployment)
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
	g.Expect(k8sClient.Status().Update(ctx, d)).To(Succeed())
	g.Eventually(func(g Gomega) {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &deliveryv1.Delivery{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		err = k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &rolloutsv1.Rollout{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
	}, timeout).Should(Succeed())
}

// TestEngine_HandBackStalls: a Deployment that cannot get its replicas back
// (a quota refuses its pods) stalls the hand-back with a condition and an
// event that say why and what to do, the Rollout keeps serving, and the
// annotation the message names hands the app back anyway.
func TestEngine_HandBackStalls(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	delivery, deployment := startHealthy(t, g, ns, nil)
	g.Eventually(func(g Gomega) *int32 { return getDeployment(g, deployment).Spec.Replicas }, timeout).
		Should(HaveValue(BeEquivalentTo(0)))
	g.Expect(k8sClient.Delete(ctx, getDelivery(g, delivery))).To(Succeed())
	g.Eventually(func(g Gomega) *int32 { return getDeployment(g, deployment).Spec.Replicas }, timeout).
		Should(HaveValue(BeEquivalentTo(2)))

	// The Deployment controller reports the quota refusing its pods.
	d := getDeployment(g, deployment)
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Conditions: []appsv1.DeploymentCondition{{
		Type: appsv1.DeploymentReplicaFailure, Status: corev1.ConditionTrue, Reason: "FailedCreate",
		Message: `pods "web-1" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2`,
	}}}
	g.Expect(k8sClient.Status().Update(ctx, d)).To(Succeed())
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(conditions.IsStalled(got)).To(BeTrue())
		g.Expect(conditions.GetReason(got, meta.StalledCondition)).To(Equal(deliveryv1.HandBackStalledReason))
		g.Expect(conditions.GetMessage(got, meta.StalledCondition)).To(And(
			ContainSubstring("0 of 2 replicas available"), ContainSubstring("exceeded quota"),
			ContainSubstring("annotate delivery web sluice.dev/hand-back=force")))
		g.Expect(conditions.Has(got, meta.ReconcilingCondition)).To(BeFalse())
	}, timeout).Should(Succeed())
	g.Eventually(func(g Gomega) []string { return warningEvents(g, getDelivery(g, delivery)) }, timeout).Should(ContainElement(deliveryv1.HandBackStalledReason))
	g.Consistently(func(g Gomega) { g.Expect(getRollout(g, delivery)).NotTo(BeNil()) }, "1s").Should(Succeed())

	got := getDelivery(g, delivery)
	update(g, got, func() { got.Annotations = map[string]string{HandBackAnnotation: HandBackForce} })
	g.Eventually(func(g Gomega) {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &deliveryv1.Delivery{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		err = k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &rolloutsv1.Rollout{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
	}, timeout).Should(Succeed())
}

func TestEngine_AutoscaledRollout(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	// An HPA (or a KEDA ScaledObject's HPA) that targets the Rollout owns its
	// replicas: sluice leaves them to it.
	g.Expect(k8sClient.Create(ctx, &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "argoproj.io/v1alpha1", Kind: "Rollout", Name: "web"},
			MinReplicas:    ptr.To[int32](2),
			MaxReplicas:    10,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](80)}}}},
		},
	})).To(Succeed())
	delivery, _ := startHealthy(t, g, ns, nil)

	// The HPA scales the Rollout; sluice does not scale it back.
	r := getRollout(g, delivery)
	update(g, r, func() {
		r.Spec.Replicas = ptr.To[int32](7)
	})
	requestReconcileOf(g, delivery, "after-scale")
	g.Eventually(func(g Gomega) string { return getDelivery(g, delivery).Status.LastHandledReconcileAt }, timeout).
		Should(Equal("after-scale"))
	g.Expect(getRollout(g, delivery).Spec.Replicas).To(HaveValue(BeEquivalentTo(7)))

	// Handed back, the Deployment takes what the app serves with, not the
	// Delivery's 2.
	g.Expect(k8sClient.Delete(ctx, getDelivery(g, delivery))).To(Succeed())
	g.Eventually(func(g Gomega) *int32 {
		return getDeployment(g, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}).Spec.Replicas
	}, timeout).Should(HaveValue(BeEquivalentTo(7)))
	g.Eventually(func(g Gomega) string { return conditions.GetMessage(getDelivery(g, delivery), meta.ReadyCondition) }, timeout).
		Should(ContainSubstring("of 7 replicas available"))
}

// deliveryEvents returns the messages of the events of one type about
// an object.
func deliveryEvents(g Gomega, obj client.Object, eventType, reason string) []string {
	var list corev1.EventList
	g.Expect(k8sClient.List(context.Background(), &list, client.InNamespace(obj.GetNamespace()))).To(Succeed())
	var messages []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == obj.GetName() && e.InvolvedObject.Kind == deliveryv1.DeliveryKind &&
			e.Type == eventType && e.Reason == reason {
			messages = append(messages, e.Message)
		}
	}
	return messages
}

// atGate plays Argo pausing the candidate at the manual gate of step 1.
func atGate(r *rolloutsv1.Rollout) {
	r.Status.Phase = rolloutsv1.RolloutPhasePaused
	r.Status.CurrentPodHash, r.Status.StableRS = "candidate1", "stable1"
	r.Status.CurrentStepIndex = ptr.To[int32](1)
	r.Status.ControllerPause = true
	r.Status.PauseConditions = []rolloutsv1.PauseCondition{{Reason: rolloutsv1.PauseReasonCanaryPauseStep, StartTime: metav1.Now()}}
}

// argoAborts plays Argo taking the abort sluice asked for: the stable pods
// serve, the candidate's template stays in the spec.
func argoAborts(r *rolloutsv1.Rollout) {
	r.Status.Phase = rolloutsv1.RolloutPhaseDegraded
	r.Status.Abort = true
	r.Status.AbortedAt = ptr.To(metav1.Now())
	r.Status.PauseConditions, r.Status.ControllerPause = nil, false
	r.Status.CurrentStepIndex = ptr.To[int32](0)
	r.Status.Message = "RolloutAborted: Rollout aborted update to revision 2"
}

func TestEngine_RejectionInGitAbortsAndRetry(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	delivery, deployment := startHealthy(t, g, ns, newCanaryPolicy(ns, "gate"))
	stable := getDelivery(g, delivery).Status.StableTemplateHash

	candidate := releaseImage(g, delivery, deployment, "registry.example/app:v2")
	setRolloutStatus(g, delivery, atGate)
	g.Eventually(func(g Gomega) deliveryv1.DeliveryPhase { return getDelivery(g, delivery).Status.Phase }, timeout).
		Should(Equal(deliveryv1.PhaseWaitingForApproval))

	// A person rejects the candidate at its gate in Git: sluice aborts the
	// Rollout as `kubectl argo rollouts abort` does.
	got := getDelivery(g, delivery)
	update(g, got, func() {
		got.Spec.Promotion.Rejection = &deliveryv1.Rejection{TemplateHash: candidate, Reason: "latency doubled in eu-west"}
	})
	g.Eventually(func(g Gomega) bool { return getRollout(g, delivery).Status.Abort }, timeout).Should(BeTrue())
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseRejected))
		g.Expect(got.Status.RejectedTemplateHash).To(Equal(candidate))
		g.Expect(conditions.IsStalled(got)).To(BeTrue())
		g.Expect(conditions.GetMessage(got, meta.StalledCondition)).To(Equal(
			"template " + candidate + " rejected, the Rollout runs the stable template " + stable +
				": rejected in Git (spec.promotion.rejection): latency doubled in eu-west"))
	}, timeout).Should(Succeed())
	g.Eventually(func(g Gomega) []string {
		return deliveryEvents(g, delivery, corev1.EventTypeWarning, deliveryv1.AbortedReason)
	}, timeout).
		Should(ConsistOf("aborted the Rollout of template " + candidate + ", the stable template " + stable +
			" keeps serving: rejected in Git (spec.promotion.rejection): latency doubled in eu-west"))
	// The Rollout keeps the candidate's template: Argo goes back to the
	// stable ReplicaSet by itself.
	g.Expect(getRollout(g, delivery).Spec.Template.Spec.Containers[0].Image).To(Equal("registry.example/app:v2"))

	// Argo takes the abort. sluice neither aborts again nor says it again.
	setRolloutStatus(g, delivery, argoAborts)
	g.Consistently(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseRejected))
		g.Expect(got.Status.RejectedTemplateHash).To(Equal(candidate))
		g.Expect(deliveryEvents(g, delivery, corev1.EventTypeWarning, deliveryv1.AbortedReason)).To(HaveLen(1))
		g.Expect(getRollout(g, delivery).Status.Abort).To(BeTrue())
	}, "2s").Should(Succeed())
	statusChecker().WithT(g).CheckErr(ctx, getDelivery(g, delivery))

	// Retry: the rejection leaves Git, and the candidate rolls again, as
	// after `kubectl argo rollouts retry`.
	got = getDelivery(g, delivery)
	update(g, got, func() { got.Spec.Promotion.Rejection = nil })
	g.Eventually(func(g Gomega) bool { return getRollout(g, delivery).Status.Abort }, timeout).Should(BeFalse())
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseProgressing))
		// Reconciling says Retried until the next reconcile sees the
		// Rollout rolling again; Promoted keeps it until the template
		// is stable or waits at a gate.
		g.Expect(conditions.IsReconciling(got)).To(BeTrue())
		g.Expect(conditions.GetReason(got, deliveryv1.PromotedCondition)).To(Equal(deliveryv1.RetriedReason))
	}, timeout).Should(Succeed())
	g.Eventually(func(g Gomega) []string {
		return deliveryEvents(g, delivery, corev1.EventTypeNormal, deliveryv1.RetriedReason)
	}, timeout).
		Should(HaveLen(1))

	// Argo starts the candidate over and reaches the gate again.
	setRolloutStatus(g, delivery, func(r *rolloutsv1.Rollout) {
		atGate(r)
		r.Status.Abort, r.Status.AbortedAt, r.Status.Message = false, nil, ""
	})
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(got.Status.RejectedTemplateHash).To(BeEmpty())
	}, timeout).Should(Succeed())

	// Rejected again and aborted; then a later candidate comes from Git.
	// The old rejection does not touch it.
	got = getDelivery(g, delivery)
	update(g, got, func() {
		got.Spec.Promotion.Rejection = &deliveryv1.Rejection{TemplateHash: candidate, Reason: "still slow"}
	})
	g.Eventually(func(g Gomega) bool { return getRollout(g, delivery).Status.Abort }, timeout).Should(BeTrue())
	setRolloutStatus(g, delivery, argoAborts)
	g.Eventually(func(g Gomega) []string {
		return deliveryEvents(g, delivery, corev1.EventTypeWarning, deliveryv1.AbortedReason)
	}, timeout).
		Should(HaveLen(2))
	later := releaseImage(g, delivery, deployment, "registry.example/app:v3")
	// Argo resets the abort for a new template.
	setRolloutStatus(g, delivery, func(r *rolloutsv1.Rollout) {
		atGate(r)
		r.Status.CurrentPodHash = "candidate2"
		r.Status.Abort, r.Status.AbortedAt, r.Status.Message = false, nil, ""
	})
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(got.Status.CandidateTemplateHash).To(Equal(later))
		g.Expect(got.Status.RejectedTemplateHash).To(BeEmpty())
	}, timeout).Should(Succeed())
	g.Consistently(func(g Gomega) bool { return getRollout(g, delivery).Status.Abort }, "2s").Should(BeFalse())
}

func TestEngine_InconclusiveAnalysisIsAGate(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g.Expect(k8sClient.Create(ctx, &rolloutsv1.AnalysisTemplate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "latency"},
		Spec: rolloutsv1.AnalysisTemplateSpec{Metrics: []rolloutsv1.Metric{{
			Name: "p99", Provider: rolloutsv1.MetricProvider{Web: &rolloutsv1.WebMetric{URL: "http://metrics.example/p99"}},
		}}},
	})).To(Succeed())
	policy := newCanaryPolicy(ns, "analysed")
	policy.Spec.Canary.Steps = []deliveryv1.CanaryStep{
		{SetWeight: ptr.To[int32](20)},
		{Analysis: &deliveryv1.Analysis{Templates: []deliveryv1.AnalysisTemplateRef{{Name: "latency"}}}},
		{SetWeight: ptr.To[int32](50)},
	}
	delivery, deployment := startHealthy(t, g, ns, policy)
	candidate := releaseImage(g, delivery, deployment, "registry.example/app:v2")

	// Argo's run of the analysis step ends Inconclusive: Argo pauses.
	rollout := getRollout(g, delivery)
	run := &rolloutsv1.AnalysisRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-candidate1-1",
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(rollout, rolloutsv1.SchemeGroupVersion.WithKind("Rollout"))}},
		Spec: rolloutsv1.AnalysisRunSpec{Metrics: []rolloutsv1.Metric{{
			Name: "p99", Provider: rolloutsv1.MetricProvider{Web: &rolloutsv1.WebMetric{URL: "http://metrics.example/p99"}},
		}}},
		Status: rolloutsv1.AnalysisRunStatus{Phase: rolloutsv1.AnalysisPhaseInconclusive, MetricResults: []rolloutsv1.MetricResult{{
			Name: "p99", Phase: rolloutsv1.AnalysisPhaseInconclusive, Inconclusive: 2,
			Measurements: []rolloutsv1.Measurement{
				{Phase: rolloutsv1.AnalysisPhaseInconclusive, Value: "0.41"},
				{Phase: rolloutsv1.AnalysisPhaseInconclusive, Value: "0.43"},
			},
		}}},
	}
	g.Expect(k8sClient.Create(ctx, run)).To(Succeed())
	setRolloutStatus(g, delivery, func(r *rolloutsv1.Rollout) {
		r.Status.Phase = rolloutsv1.RolloutPhasePaused
		r.Status.CurrentPodHash, r.Status.StableRS = "candidate1", "stable1"
		r.Status.CurrentStepIndex = ptr.To[int32](1)
		r.Status.ControllerPause = true
		r.Status.PauseConditions = []rolloutsv1.PauseCondition{{Reason: rolloutsv1.PauseReasonInconclusiveAnalysis, StartTime: metav1.Now()}}
		r.Status.Canary.CurrentStepAnalysisRunStatus = &rolloutsv1.RolloutAnalysisRunStatus{
			Name: run.Name, Status: rolloutsv1.AnalysisPhaseInconclusive,
		}
	})
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(got.Status.CurrentStep).To(HaveValue(BeEquivalentTo(1)))
		g.Expect(got.Status.CandidateTemplateHash).To(Equal(candidate))
		g.Expect(conditions.GetReason(got, meta.ReconcilingCondition)).To(Equal(deliveryv1.WaitingForApprovalReason))
		g.Expect(conditions.GetMessage(got, meta.ReconcilingCondition)).To(Equal(
			"template " + candidate + " waits for approval at step 1: AnalysisRun web-candidate1-1 was inconclusive: metric p99 Inconclusive (measured 0.41, 0.43)"))
	}, timeout).Should(Succeed())
	statusChecker().WithT(g).CheckErr(ctx, getDelivery(g, delivery))

	// A rejection committed meanwhile for another template changes
	// nothing; the approval of this step is what counts.
	got := getDelivery(g, delivery)
	update(g, got, func() {
		got.Spec.Promotion.Rejection = &deliveryv1.Rejection{TemplateHash: "0000000000", Reason: "an older release"}
	})
	g.Consistently(func(g Gomega) {
		g.Expect(getRollout(g, delivery).Status.Abort).To(BeFalse())
		g.Expect(getDelivery(g, delivery).Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
	}, "2s").Should(Succeed())

	// The approval of that step lets the Rollout past the analysis, as
	// `kubectl argo rollouts promote` does: Argo's pause goes and the
	// Rollout moves to the next step rather than running the analysis again.
	got = getDelivery(g, delivery)
	update(g, got, func() {
		got.Spec.Promotion.Approvals = []deliveryv1.Approval{{TemplateHash: candidate, Step: 1}}
	})
	g.Eventually(func(g Gomega) {
		st := getRollout(g, delivery).Status
		g.Expect(st.PauseConditions).To(BeEmpty())
		g.Expect(st.ControllerPause).To(BeFalse())
		g.Expect(st.CurrentStepIndex).To(HaveValue(BeEquivalentTo(2)))
	}, timeout).Should(Succeed())
	g.Eventually(func(g Gomega) []string { return deliveryEvents(g, delivery, corev1.EventTypeNormal, "Promoted") }, timeout).
		Should(ConsistOf("promoted template " + candidate + " past step 1"))
}

func TestEngine_RollbackWindow(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)

	// The built-in policy lets a rollback to the three revisions before
	// the stable one skip the steps.
	delivery, _ := startHealthy(t, g, ns, nil)
	g.Expect(getRollout(g, delivery).Spec.RollbackWindow).To(Equal(&rolloutsv1.RollbackWindowSpec{Revisions: 3}))

	// A policy sets its own, and Argo's follows it.
	policy := newCanaryPolicy(ns, "windowed")
	policy.Spec.RollbackWindow = &deliveryv1.RollbackWindow{Revisions: 1}
	g.Expect(k8sClient.Create(context.Background(), policy)).To(Succeed())
	got := getDelivery(g, delivery)
	update(g, got, func() { got.Spec.PolicyRef = &meta.LocalObjectReference{Name: "windowed"} })
	g.Eventually(func(g Gomega) *rolloutsv1.RollbackWindowSpec { return getRollout(g, delivery).Spec.RollbackWindow }, timeout).
		Should(Equal(&rolloutsv1.RollbackWindowSpec{Revisions: 1}))

	// And takes it away with revisions: 0.
	policy = &deliveryv1.DeliveryPolicy{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "windowed"}, policy)).To(Succeed())
	update(g, policy, func() { policy.Spec.RollbackWindow.Revisions = 0 })
	g.Eventually(func(g Gomega) *rolloutsv1.RollbackWindowSpec { return getRollout(g, delivery).Spec.RollbackWindow }, timeout).
		Should(BeNil())
}

func TestEngine_RejectionAtAnInconclusiveGateAborts(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	g.Expect(k8sClient.Create(context.Background(), &rolloutsv1.AnalysisTemplate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "latency"},
		Spec: rolloutsv1.AnalysisTemplateSpec{Metrics: []rolloutsv1.Metric{{
			Name: "p99", Provider: rolloutsv1.MetricProvider{Web: &rolloutsv1.WebMetric{URL: "http://metrics.example/p99"}},
		}}},
	})).To(Succeed())
	policy := newCanaryPolicy(ns, "analysed")
	policy.Spec.Canary.BackgroundAnalysis = &deliveryv1.Analysis{Templates: []deliveryv1.AnalysisTemplateRef{{Name: "latency"}}}
	delivery, deployment := startHealthy(t, g, ns, policy)
	candidate := releaseImage(g, delivery, deployment, "registry.example/app:v2")

	// The background analysis ends Inconclusive at step 0; the run is gone
	// already, and the message says so.
	setRolloutStatus(g, delivery, func(r *rolloutsv1.Rollout) {
		r.Status.Phase = rolloutsv1.RolloutPhasePaused
		r.Status.CurrentPodHash, r.Status.StableRS = "candidate1", "stable1"
		r.Status.CurrentStepIndex = ptr.To[int32](0)
		r.Status.ControllerPause = true
		r.Status.PauseConditions = []rolloutsv1.PauseCondition{{Reason: rolloutsv1.PauseReasonInconclusiveAnalysis, StartTime: metav1.Now()}}
		r.Status.Canary.CurrentBackgroundAnalysisRunStatus = &rolloutsv1.RolloutAnalysisRunStatus{
			Name: "web-candidate1-gone", Status: rolloutsv1.AnalysisPhaseInconclusive,
		}
	})
	g.Eventually(func(g Gomega) string {
		return conditions.GetMessage(getDelivery(g, delivery), meta.ReconcilingCondition)
	}, timeout).Should(Equal("template " + candidate + " waits for approval at step 0: AnalysisRun web-candidate1-gone was inconclusive"))

	// A rejection committed at that gate aborts the Rollout.
	got := getDelivery(g, delivery)
	update(g, got, func() {
		got.Spec.Promotion.Rejection = &deliveryv1.Rejection{TemplateHash: candidate, Reason: "nobody can tell"}
	})
	g.Eventually(func(g Gomega) bool { return getRollout(g, delivery).Status.Abort }, timeout).Should(BeTrue())
	g.Eventually(func(g Gomega) deliveryv1.DeliveryPhase { return getDelivery(g, delivery).Status.Phase }, timeout).
		Should(Equal(deliveryv1.PhaseRejected))
}
