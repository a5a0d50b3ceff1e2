package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// These scenarios drive the Delivery engine directly, as Flux would apply
// Deliveries and Deployments, against the real Argo Rollouts controller and
// kwok pods.

const (
	replicas = 2
	image    = "registry.example/web:"
)

func createNamespace(t *testing.T, name string) {
	t.Helper()
	if err := k8sClient.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
}

func webDeployment(ns, version string) *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: image + version}}},
			},
		},
	}
}

func webDelivery(ns, policy string) *deliveryv1.Delivery {
	return &deliveryv1.Delivery{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: deliveryv1.DeliverySpec{
			DeploymentRef: meta.LocalObjectReference{Name: "web"},
			Strategy:      deliveryv1.StrategyCanary,
			PolicyRef:     &meta.LocalObjectReference{Name: policy},
			Replicas:      ptr.To[int32](replicas),
		},
	}
}

func canaryPolicy(ns, name string, steps ...deliveryv1.CanaryStep) *deliveryv1.DeliveryPolicy {
	return &deliveryv1.DeliveryPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       deliveryv1.DeliveryPolicySpec{Canary: &deliveryv1.CanaryStrategy{Steps: steps}},
	}
}

func getObj[T client.Object](g Gomega, obj T) T {
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)).To(Succeed())
	return obj
}

// availability polls, every 100 ms, the available replicas of the app
// across its Deployment and its Rollout, and the images of its available
// pods.
type availability struct {
	mu       sync.Mutex
	min      int32
	samples  int
	violated []string
	stop     chan struct{}
	done     chan struct{}
}

// watchAvailability starts polling; check is called with the app's pods at
// each poll and returns a violation to record, if any.
func watchAvailability(ns string, check func(pods []corev1.Pod) string) *availability {
	return watchAvailabilityOn(k8sClient, ns, check)
}

// watchAvailabilityOn is watchAvailability on the cluster of client c.
func watchAvailabilityOn(c client.Client, ns string, check func(pods []corev1.Pod) string) *availability {
	a := &availability{min: 1 << 30, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		ctx := context.Background()
		for {
			select {
			case <-a.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			var total int32
			d := &appsv1.Deployment{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, d); err == nil {
				total += d.Status.AvailableReplicas
			}
			r := &rolloutsv1.Rollout{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, r); err == nil {
				total += r.Status.AvailableReplicas
			}
			var pods corev1.PodList
			_ = c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app": "web"})
			a.mu.Lock()
			a.samples++
			if total < a.min {
				a.min = total
			}
			if check != nil {
				if v := check(pods.Items); v != "" {
					a.violated = append(a.violated, v)
				}
			}
			a.mu.Unlock()
		}
	}()
	return a
}

func (a *availability) finish() (minAvailable int32, samples int, violated []string) {
	close(a.stop)
	<-a.done
	return a.min, a.samples, a.violated
}

func deliveryPhase(g Gomega, d *deliveryv1.Delivery) deliveryv1.DeliveryPhase {
	return getObj(g, d.DeepCopy()).Status.Phase
}

// kstatus checks a Delivery's conditions the way Flux's health checks read
// them.
func kstatus() *check.Checker {
	return check.NewChecker(k8sClient, &check.Conditions{NegativePolarity: []string{meta.ReconcilingCondition, meta.StalledCondition}})
}

// TestCanaryLifecycle adopts a running Deployment, releases a new image
// through a manual gate approved in the Delivery's spec, and hands the app
// back, never dropping below the desired available replicas.
func TestCanaryLifecycle(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := "canary"
	createNamespace(t, ns)

	g.Expect(k8sClient.Create(ctx, webDeployment(ns, "v1"))).To(Succeed())
	g.Eventually(func(g Gomega) int32 {
		return getObj(g, webDeployment(ns, "")).Status.AvailableReplicas
	}, time.Minute, 100*time.Millisecond).Should(BeEquivalentTo(replicas))

	watch := watchAvailability(ns, nil)

	g.Expect(k8sClient.Create(ctx, canaryPolicy(ns, "gate",
		deliveryv1.CanaryStep{SetWeight: ptr.To[int32](50)},
		deliveryv1.CanaryStep{Pause: &deliveryv1.PauseStep{}},
	))).To(Succeed())
	delivery := webDelivery(ns, "gate")
	created := time.Now()
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())

	// Handover: the Rollout comes up beside the Deployment, which is scaled
	// to zero once the Rollout serves.
	g.Eventually(func(g Gomega) {
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		g.Expect(r.Status.Phase).To(Equal(rolloutsv1.RolloutPhaseHealthy))
	}, time.Minute, 50*time.Millisecond).Should(Succeed())
	t.Logf("Delivery created → Rollout Healthy in %s", time.Since(created).Round(time.Millisecond))
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(d.Status.Phase).To(Equal(deliveryv1.PhaseHealthy), "%v", d.Status.Conditions)
		g.Expect(conditions.IsReady(d)).To(BeTrue())
		g.Expect(getObj(g, webDeployment(ns, "")).Spec.Replicas).To(HaveValue(BeEquivalentTo(0)))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	t.Logf("Delivery created → Delivery Ready in %s", time.Since(created).Round(time.Millisecond))
	kstatus().WithT(g).CheckErr(ctx, getObj(g, delivery.DeepCopy()))
	stable := getObj(g, delivery.DeepCopy()).Status.StableTemplateHash

	// Release: Flux applies a new image to the Deployment.
	candidate := release(g, ns, "v2")

	g.Eventually(func(g Gomega) {
		got := getObj(g, delivery.DeepCopy())
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(got.Status.CandidateTemplateHash).To(Equal(candidate))
		g.Expect(got.Status.StableTemplateHash).To(Equal(stable))
		g.Expect(got.Status.CurrentStep).To(HaveValue(BeEquivalentTo(1)))
		g.Expect(got.Status.CanaryWeight).To(HaveValue(BeEquivalentTo(50)))
		g.Expect(conditions.IsReconciling(got)).To(BeTrue())
		g.Expect(conditions.GetReason(got, meta.ReconcilingCondition)).To(Equal(deliveryv1.WaitingForApprovalReason))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())

	// An approval for another step does nothing and says so.
	got := getObj(g, delivery.DeepCopy())
	update(g, got, func() {
		got.Spec.Promotion.Approvals = []deliveryv1.Approval{{TemplateHash: candidate, Step: 0}}
	})
	g.Eventually(func(g Gomega) string {
		return conditions.GetMessage(getObj(g, delivery.DeepCopy()), meta.ReconcilingCondition)
	}, 30*time.Second, 100*time.Millisecond).Should(ContainSubstring(fmt.Sprintf("approves template %s at step 0, not the candidate", candidate)))
	g.Expect(deliveryPhase(g, delivery)).To(Equal(deliveryv1.PhaseWaitingForApproval))

	// The approval for the candidate at its gate promotes it.
	got = getObj(g, delivery.DeepCopy())
	update(g, got, func() {
		got.Spec.Promotion.Approvals = []deliveryv1.Approval{{TemplateHash: candidate, Step: 1}}
	})
	g.Eventually(func(g Gomega) {
		got := getObj(g, delivery.DeepCopy())
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(got.Status.StableTemplateHash).To(Equal(candidate))
		g.Expect(conditions.IsReady(got)).To(BeTrue())
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
	kstatus().WithT(g).CheckErr(ctx, getObj(g, delivery.DeepCopy()))

	metrics := scrape(t)
	g.Expect(metrics).To(ContainElements(
		`sluice_promotions_total{name="web",namespace="canary"} 1`,
		`sluice_delivery_phase{name="web",namespace="canary",phase="Healthy"} 1`,
		`gotk_reconcile_condition{kind="Delivery",name="web",namespace="canary",status="True",type="Ready"} 1`,
	))
	// One phase series per Delivery: the phases it went through are gone.
	g.Expect(metrics).To(ContainElement(HavePrefix(`sluice_delivery_phase{name="web",namespace="canary",`)))
	for _, line := range metrics {
		if strings.HasPrefix(line, `sluice_delivery_phase{name="web",namespace="canary",`) {
			g.Expect(line).To(HaveSuffix(`phase="Healthy"} 1`))
		}
	}

	// Opt-out: the Deployment takes the app back before the Rollout goes.
	g.Expect(k8sClient.Delete(ctx, getObj(g, delivery.DeepCopy()))).To(Succeed())
	g.Eventually(func(g Gomega) {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &deliveryv1.Delivery{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		err = k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &rolloutsv1.Rollout{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		g.Expect(getObj(g, webDeployment(ns, "")).Status.AvailableReplicas).To(BeEquivalentTo(replicas))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())

	minAvailable, samples, _ := watch.finish()
	t.Logf("available replicas never fell below %d in %d samples", minAvailable, samples)
	g.Expect(samples).To(BeNumerically(">", 10))
	g.Expect(minAvailable).To(BeNumerically(">=", replicas))
}

// TestFailedAnalysisRejects releases an image whose analysis fails: Argo's
// web metric asks an endpoint the test serves, which answers failure.
func TestFailedAnalysisRejects(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := "rejected"
	createNamespace(t, ns)

	metric := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"successRate": 0.42}`))
	}))
	t.Cleanup(metric.Close)

	g.Expect(k8sClient.Create(ctx, &rolloutsv1.AnalysisTemplate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "success-rate"},
		Spec: rolloutsv1.AnalysisTemplateSpec{Metrics: []rolloutsv1.Metric{{
			Name:             "success-rate",
			SuccessCondition: "result >= 0.99",
			FailureLimit:     ptr.To(intstr.FromInt32(0)),
			Count:            ptr.To(intstr.FromInt32(1)),
			Provider: rolloutsv1.MetricProvider{Web: &rolloutsv1.WebMetric{
				URL:      metric.URL + "/success-rate",
				JSONPath: "{$.successRate}",
			}},
		}}},
	})).To(Succeed())
	g.Expect(k8sClient.Create(ctx, canaryPolicy(ns, "analysed",
		deliveryv1.CanaryStep{SetWeight: ptr.To[int32](50)},
		deliveryv1.CanaryStep{Analysis: &deliveryv1.Analysis{Templates: []deliveryv1.AnalysisTemplateRef{{Name: "success-rate"}}}},
	))).To(Succeed())
	g.Expect(k8sClient.Create(ctx, webDeployment(ns, "v1"))).To(Succeed())
	delivery := webDelivery(ns, "analysed")
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())
	g.Eventually(func(g Gomega) deliveryv1.DeliveryPhase { return deliveryPhase(g, delivery) },
		time.Minute, 100*time.Millisecond).Should(Equal(deliveryv1.PhaseHealthy))
	stable := getObj(g, delivery.DeepCopy()).Status.StableTemplateHash

	candidate := release(g, ns, "v2")

	g.Eventually(func(g Gomega) {
		got := getObj(g, delivery.DeepCopy())
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseRejected))
		g.Expect(conditions.IsStalled(got)).To(BeTrue())
		g.Expect(conditions.IsFalse(got, meta.ReadyCondition)).To(BeTrue())
		g.Expect(conditions.GetReason(got, deliveryv1.PromotedCondition)).To(Equal(deliveryv1.RejectedReason))
		msg := conditions.GetMessage(got, meta.StalledCondition)
		g.Expect(msg).To(ContainSubstring("template " + candidate + " rejected"))
		g.Expect(msg).To(ContainSubstring("metric success-rate failed in AnalysisRun web-"))
		g.Expect(got.Status.StableTemplateHash).To(Equal(stable))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	kstatus().WithT(g).CheckErr(ctx, getObj(g, delivery.DeepCopy()))
	g.Expect(scrape(t)).To(ContainElements(
		`sluice_rejections_total{name="web",namespace="rejected"} 1`,
		`sluice_delivery_phase{name="web",namespace="rejected",phase="Rejected"} 1`,
		`gotk_reconcile_condition{kind="Delivery",name="web",namespace="rejected",status="False",type="Ready"} 1`,
	))

	// The Rollout stays on stable: every pod left runs v1.
	g.Eventually(func(g Gomega) {
		var pods corev1.PodList
		g.Expect(k8sClient.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app": "web"})).To(Succeed())
		var v1 int
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			g.Expect(p.Spec.Containers[0].Image).To(Equal(image + "v1"))
			v1++
		}
		g.Expect(v1).To(Equal(replicas))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())
}

// TestStableFirstStart starts a Delivery whose spec records v1 as stable
// while the Deployment already says v2, as on a rebuilt cluster: v1 comes
// up first, and no v2 pod exists before v1 is available.
func TestStableFirstStart(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := "rebuilt"
	createNamespace(t, ns)

	g.Expect(k8sClient.Create(ctx, canaryPolicy(ns, "gate",
		deliveryv1.CanaryStep{SetWeight: ptr.To[int32](50)},
		deliveryv1.CanaryStep{Pause: &deliveryv1.PauseStep{}},
	))).To(Succeed())
	// The Deployment is at zero, as sluice left it on the old cluster.
	v2 := webDeployment(ns, "v2")
	v2.Spec.Replicas = ptr.To[int32](0)
	g.Expect(k8sClient.Create(ctx, v2)).To(Succeed())
	applied := getObj(g, webDeployment(ns, ""))
	v1Template := applied.Spec.Template.DeepCopy()
	v1Template.Spec.Containers[0].Image = image + "v1"

	v1Ready, check := stableFirst(image+"v1", image+"v2", replicas)
	watch := watchAvailability(ns, check)

	delivery := webDelivery(ns, "gate")
	delivery.Spec.Promotion.Stable = &deliveryv1.StableRelease{
		TemplateHash: deliveryv1.TemplateHash(v1Template),
		Images:       []deliveryv1.ContainerImage{{Name: "web", Image: image + "v1"}},
	}
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())

	// v2 follows as a candidate and stops at the gate.
	g.Eventually(func(g Gomega) {
		got := getObj(g, delivery.DeepCopy())
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(got.Status.StableTemplateHash).To(Equal(deliveryv1.TemplateHash(v1Template)))
		g.Expect(got.Status.CandidateTemplateHash).To(Equal(deliveryv1.TemplateHash(&applied.Spec.Template)))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())

	// The watch saw v1's pods ready (however fast sluice got there) and no
	// v2 pod before them.
	_, samples, violated := watch.finish()
	g.Expect(samples).To(BeNumerically(">", 0))
	g.Expect(violated).To(BeEmpty())
	select {
	case <-v1Ready:
	default:
		t.Fatal("v1 was never available")
	}
}

// stableFirst returns a check for watchAvailability that records any pod
// of the candidate image seen before replicas pods of the stable image are
// ready, and a channel closed once they are.
func stableFirst(stable, candidate string, replicas int) (<-chan struct{}, func([]corev1.Pod) string) {
	var once sync.Once
	ready := make(chan struct{})
	return ready, func(pods []corev1.Pod) string {
		var readyStable, candidates int
		for _, p := range pods {
			switch p.Spec.Containers[0].Image {
			case stable:
				if podReady(p) {
					readyStable++
				}
			case candidate:
				candidates++
			}
		}
		if readyStable >= replicas {
			once.Do(func() { close(ready) })
		}
		select {
		case <-ready:
			return ""
		default:
		}
		if candidates > 0 {
			return fmt.Sprintf("%d %s pods while only %d %s pods were ready", candidates, candidate, readyStable, stable)
		}
		return ""
	}
}

// release sets the web Deployment's image to version, as Flux applies a new
// one, and returns the candidate template's hash.
func release(g Gomega, ns, version string) string {
	d := getObj(g, webDeployment(ns, ""))
	update(g, d, func() {
		d.Spec.Template.Spec.Containers[0].Image = image + version
	})
	return deliveryv1.TemplateHash(&d.Spec.Template)
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil
		}
	}
	return false
}

// scrape returns the lines of sluice's Prometheus endpoint.
func scrape(t *testing.T) []string {
	t.Helper()
	resp, err := http.Get(env.SluiceMetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(body), "\n")
}

// TestBlueGreenApproval runs a blue-green release whose switch waits for an
// approval of step 0.
func TestBlueGreenApproval(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := "blue-green"
	createNamespace(t, ns)

	for _, name := range []string{"web", "web-preview"} {
		g.Expect(k8sClient.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "web"},
				Ports:    []corev1.ServicePort{{Port: 80}},
			},
		})).To(Succeed())
	}
	g.Expect(k8sClient.Create(ctx, &deliveryv1.DeliveryPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "manual"},
		Spec: deliveryv1.DeliveryPolicySpec{BlueGreen: &deliveryv1.BlueGreenStrategy{
			ActiveService:         "web",
			PreviewService:        "web-preview",
			AutoPromotionEnabled:  ptr.To(false),
			ScaleDownDelaySeconds: ptr.To[int32](0),
		}},
	})).To(Succeed())
	g.Expect(k8sClient.Create(ctx, webDeployment(ns, "v1"))).To(Succeed())
	delivery := webDelivery(ns, "manual")
	delivery.Spec.Strategy = deliveryv1.StrategyBlueGreen
	g.Expect(k8sClient.Create(ctx, delivery)).To(Succeed())
	g.Eventually(func(g Gomega) deliveryv1.DeliveryPhase { return deliveryPhase(g, delivery) },
		time.Minute, 100*time.Millisecond).Should(Equal(deliveryv1.PhaseHealthy))

	candidate := release(g, ns, "v2")
	g.Eventually(func(g Gomega) {
		got := getObj(g, delivery.DeepCopy())
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseWaitingForApproval))
		g.Expect(got.Status.CandidateTemplateHash).To(Equal(candidate))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())

	got := getObj(g, delivery.DeepCopy())
	update(g, got, func() {
		got.Spec.Promotion.Approvals = []deliveryv1.Approval{{TemplateHash: candidate, Step: 0}}
	})
	g.Eventually(func(g Gomega) {
		got := getObj(g, delivery.DeepCopy())
		g.Expect(got.Status.Phase).To(Equal(deliveryv1.PhaseHealthy))
		g.Expect(got.Status.StableTemplateHash).To(Equal(candidate))
		svc := getObj(g, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		r := getObj(g, &rolloutsv1.Rollout{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		g.Expect(svc.Spec.Selector).To(HaveKeyWithValue(rolloutsv1.DefaultRolloutUniqueLabelKey, r.Status.CurrentPodHash))
	}, time.Minute, 100*time.Millisecond).Should(Succeed())

	// Hand-back: the active Service never selects fewer ready pods than the
	// app has, while the Deployment comes up and the Rollout goes.
	g.Expect(k8sClient.Delete(ctx, getObj(g, delivery.DeepCopy()))).To(Succeed())
	minReady, samples, quiet := replicas+1, 0, time.Time{}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		svc := getObj(g, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
		var pods corev1.PodList
		g.Expect(k8sClient.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels(svc.Spec.Selector))).To(Succeed())
		if getObj(g, svc.DeepCopy()).ResourceVersion != svc.ResourceVersion {
			// The selector changed while the pods were listed: they may
			// be those the Service no longer selects.
			continue
		}
		ready := 0
		for _, p := range pods.Items {
			if podReady(p) && p.DeletionTimestamp == nil {
				ready++
			}
		}
		samples++
		minReady = min(minReady, ready)
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(delivery), &rolloutsv1.Rollout{})
		switch {
		case !apierrors.IsNotFound(err):
		case quiet.IsZero():
			quiet = time.Now().Add(2 * time.Second)
		case time.Now().After(quiet):
			deadline = time.Now()
		}
	}
	g.Expect(quiet).NotTo(BeZero(), "the Rollout was never removed")
	t.Logf("hand-back: at least %d ready pods behind the active Service in %d samples", minReady, samples)
	g.Expect(minReady).To(BeNumerically(">=", replicas))
	svc := getObj(g, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
	g.Expect(svc.Spec.Selector).To(Equal(map[string]string{"app": "web"}))
}
