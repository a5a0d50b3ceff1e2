package controllers

import (
	"context"
	"testing"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/fluxcd/pkg/runtime/conditions/check"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/internal/kubetest"
)

const timeout = 20 * time.Second

// statusChecker verifies that a Delivery's conditions follow kstatus as Flux
// reads them: Reconciling and Stalled are the negative-polarity conditions.
func statusChecker() *check.Checker {
	return check.NewChecker(k8sClient, &check.Conditions{
		NegativePolarity: []string{meta.ReconcilingCondition, meta.StalledCondition},
	})
}

func newDeployment(ns, name string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:v1"}}},
			},
		},
	}
}

func newDelivery(ns, name, strategy string, policy string) *deliveryv1.Delivery {
	d := &deliveryv1.Delivery{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: deliveryv1.DeliverySpec{
			DeploymentRef: meta.LocalObjectReference{Name: name},
			Strategy:      strategy,
			Replicas:      ptr.To[int32](2),
		},
	}
	if policy != "" {
		d.Spec.PolicyRef = &meta.LocalObjectReference{Name: policy}
	}
	return d
}

func newCanaryPolicy(ns, name string) *deliveryv1.DeliveryPolicy {
	return &deliveryv1.DeliveryPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: deliveryv1.DeliveryPolicySpec{Canary: &deliveryv1.CanaryStrategy{
			Steps: []deliveryv1.CanaryStep{{SetWeight: ptr.To[int32](20)}, {Pause: &deliveryv1.PauseStep{}}},
		}},
	}
}

// getRollout fetches the Delivery's Rollout, nil when there is none.
func getRollout(g Gomega, d *deliveryv1.Delivery) *rolloutsv1.Rollout {
	r := &rolloutsv1.Rollout{}
	err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(d), r)
	if apierrors.IsNotFound(err) {
		return nil
	}
	g.Expect(err).NotTo(HaveOccurred())
	return r
}

// getDelivery fetches the current state of a Delivery.
func getDelivery(g Gomega, d *deliveryv1.Delivery) *deliveryv1.Delivery {
	got := &deliveryv1.Delivery{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(d), got)).To(Succeed())
	return got
}

// warningEvents returns the reasons of the Warning events about an object.
func warningEvents(g Gomega, obj client.Object) []string {
	var list corev1.EventList
	g.Expect(k8sClient.List(context.Background(), &list, client.InNamespace(obj.GetNamespace()))).To(Succeed())
	var reasons []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == obj.GetName() && e.Type == corev1.EventTypeWarning {
			reasons = append(reasons, e.Reason)
		}
	}
	return reasons
}

func TestDeliveryReconciler_DeploymentNotFound(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	delivery := newDelivery(ns, "web", deliveryv1.StrategyCanary, "")
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())

	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(conditions.IsStalled(got)).To(BeTrue())
		g.Expect(conditions.GetReason(got, meta.StalledCondition)).To(Equal(deliveryv1.DeploymentNotFoundReason))
		g.Expect(conditions.GetMessage(got, meta.StalledCondition)).To(ContainSubstring("spec.deploymentRef.name: Deployment web not found"))
		g.Expect(conditions.IsFalse(got, meta.ReadyCondition)).To(BeTrue())
		g.Expect(conditions.Has(got, meta.ReconcilingCondition)).To(BeFalse())
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseFailed))
		g.Expect(got.Finalizers).To(ContainElement(deliveryv1.DeliveryFinalizer))
	}, timeout).Should(Succeed())
	statusChecker().WithT(g).CheckErr(ctx, getDelivery(g, delivery))
	g.Eventually(func(g Gomega) []string { return warningEvents(g, delivery) }, timeout).
		Should(ContainElement(deliveryv1.DeploymentNotFoundReason))

	// The Deployment watch brings the Delivery back without a requeue, and
	// the handover starts.
	g.Expect(k8sClient.Create(ctx, newDeployment(ns, "web"))).To(Succeed())
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(conditions.Has(got, meta.StalledCondition)).To(BeFalse())
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseHandover))
		g.Expect(conditions.GetReason(got, meta.ReconcilingCondition)).To(Equal(deliveryv1.HandoverReason))
		g.Expect(conditions.IsFalse(got, meta.ReadyCondition)).To(BeTrue())
	}, timeout).Should(Succeed())
	g.Expect(getRollout(g, delivery)).NotTo(BeNil())
}

func TestDeliveryReconciler_Policy(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	g.Expect(k8sClient.Create(ctx, newDeployment(ns, "web"))).To(Succeed())
	delivery := newDelivery(ns, "web", deliveryv1.StrategyCanary, "slow-canary")
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())

	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(conditions.IsStalled(got)).To(BeTrue())
		g.Expect(conditions.GetReason(got, meta.StalledCondition)).To(Equal(deliveryv1.PolicyNotFoundReason))
		g.Expect(conditions.GetMessage(got, meta.ReadyCondition)).To(ContainSubstring("spec.policyRef.name: DeliveryPolicy slow-canary not found"))
	}, timeout).Should(Succeed())
	statusChecker().WithT(g).CheckErr(ctx, getDelivery(g, delivery))

	// Creating the policy is enough: the policy watch maps it back, and the
	// Rollout takes the policy's steps.
	g.Expect(k8sClient.Create(ctx, newCanaryPolicy(ns, "slow-canary"))).To(Succeed())
	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(conditions.Has(got, meta.StalledCondition)).To(BeFalse())
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseHandover))
		g.Expect(getRollout(g, delivery).Spec.Strategy.Canary.Steps).To(HaveLen(2))
	}, timeout).Should(Succeed())
}

func TestDeliveryReconciler_PolicyOfAnotherStrategy(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	g.Expect(k8sClient.Create(ctx, newDeployment(ns, "web"))).To(Succeed())
	g.Expect(k8sClient.Create(ctx, newCanaryPolicy(ns, "canary"))).To(Succeed())
	delivery := newDelivery(ns, "web", deliveryv1.StrategyBlueGreen, "canary")
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())

	g.Eventually(func(g Gomega) {
		got := getDelivery(g, delivery)
		g.Expect(conditions.IsStalled(got)).To(BeTrue())
		g.Expect(conditions.GetReason(got, meta.StalledCondition)).To(Equal(deliveryv1.InvalidPolicyReason))
		g.Expect(conditions.GetMessage(got, meta.StalledCondition)).To(Equal("spec.strategy is blue-green but DeliveryPolicy canary describes canary"))
	}, timeout).Should(Succeed())
	g.Eventually(func(g Gomega) []string { return warningEvents(g, delivery) }, timeout).
		Should(ContainElement(deliveryv1.InvalidPolicyReason))
}

func TestDeliveryReconciler_Suspend(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	g.Expect(k8sClient.Create(ctx, newDeployment(ns, "web"))).To(Succeed())
	delivery := newDelivery(ns, "web", deliveryv1.StrategyCanary, "")
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())
	g.Eventually(func(g Gomega) deliveryv1.DeliveryPhase { return getDelivery(g, delivery).Status.Phase }, timeout).
		Should(Equal(deliveryv1.PhaseHandover))

	// Suspend, and in the same change point at a policy that does not
	// exist: a suspended Delivery must not notice.
	got := getDelivery(g, delivery)
	update(g, got, func() {
		got.Spec.Suspend = true
		got.Spec.PolicyRef = &meta.LocalObjectReference{Name: "missing"}
	})
	suspendedGeneration := got.Generation

	// A reconcile request is handled even while suspended, which shows the
	// reconciler has run since the spec change.
	requestReconcileOf(g, delivery, "while-suspended")
	g.Eventually(func(g Gomega) string { return getDelivery(g, delivery).Status.LastHandledReconcileAt }, timeout).
		Should(Equal("while-suspended"))
	got = getDelivery(g, delivery)
	update(g, got, func() {
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseHandover))
		g.Expect(conditions.Has(got, meta.StalledCondition)).To(BeFalse())
		g.Expect(got.Status.ObservedGeneration).To(BeNumerically("<", suspendedGeneration))

		// Resuming reconciles the new spec.
		got.Spec.Suspend = false
	})
	g.Eventually(func(g Gomega) string {
		return conditions.GetReason(getDelivery(g, delivery), meta.StalledCondition)
	}, timeout).Should(Equal(deliveryv1.PolicyNotFoundReason))
}

func TestDeliveryReconciler_RequestedAt(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	g.Expect(k8sClient.Create(ctx, newDeployment(ns, "web"))).To(Succeed())
	delivery := newDelivery(ns, "web", deliveryv1.StrategyCanary, "")
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())
	g.Eventually(func(g Gomega) deliveryv1.DeliveryPhase { return getDelivery(g, delivery).Status.Phase }, timeout).
		Should(Equal(deliveryv1.PhaseHandover))

	for _, token := range []string{"first", "second"} {
		requestReconcileOf(g, delivery, token)
		g.Eventually(func(g Gomega) string { return getDelivery(g, delivery).Status.LastHandledReconcileAt }, timeout).
			Should(Equal(token))
	}
	statusChecker().WithT(g).CheckErr(ctx, getDelivery(g, delivery))
}

func TestDeliveryReconciler_DeleteWithoutDeployment(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)

	delivery := newDelivery(ns, "web", deliveryv1.StrategyCanary, "")
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())
	g.Eventually(func(g Gomega) []string { return getDelivery(g, delivery).Finalizers }, timeout).
		Should(ContainElement(deliveryv1.DeliveryFinalizer))

	// With no Deployment to hand back to, the finalizer goes at once.
	g.Expect(k8sClient.Delete(ctx, delivery)).To(Succeed())
	g.Eventually(func() bool {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &deliveryv1.Delivery{})
		return apierrors.IsNotFound(err)
	}, timeout).Should(BeTrue())
}

// requestReconcileOf asks for a reconcile the way the Flux CLI does.
func requestReconcileOf(g Gomega, d *deliveryv1.Delivery, token string) {
	got := getDelivery(g, d)
	patch := client.MergeFrom(got.DeepCopy())
	annotations := got.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[meta.ReconcileRequestAnnotation] = token
	got.SetAnnotations(annotations)
	g.Expect(k8sClient.Patch(context.Background(), got, patch)).To(Succeed())
}

// update changes obj with mutate and updates it, retrying on conflicts.
func update(g Gomega, obj client.Object, mutate func()) {
	kubetest.Update(g, k8sClient, obj, mutate)
}
