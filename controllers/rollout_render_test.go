package controllers

import (
	"path/filepath"
	"testing"

	"github.com/fluxcd/pkg/apis/meta"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/internal/golden"
)

func renderFixture() (*deliveryv1.Delivery, *appsv1.Deployment) {
	delivery := &deliveryv1.Delivery{
		ObjectMeta: metav1.ObjectMeta{Name: "inference", Namespace: "apps", UID: "6b1c7a52-0000-4000-8000-000000000001"},
		Spec: deliveryv1.DeliverySpec{
			DeploymentRef: meta.LocalObjectReference{Name: "inference"},
			Strategy:      deliveryv1.StrategyCanary,
			Replicas:      ptr.To[int32](3),
		},
	}
	labels := map[string]string{"app.kubernetes.io/name": "inference"}
	deployment := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "inference", Namespace: "apps"},
		Spec: appsv1.DeploymentSpec{
			Replicas:             ptr.To[int32](3),
			Selector:             &metav1.LabelSelector{MatchLabels: labels},
			MinReadySeconds:      5,
			RevisionHistoryLimit: ptr.To[int32](4),
			// The pods are replaced as this says, in the canary too.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxSurge: ptr.To(intstr.FromInt32(1)), MaxUnavailable: ptr.To(intstr.FromInt32(0)),
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"app.kubernetes.io/name": "inference", "tier": "gpu"},
					Annotations: map[string]string{"prometheus.io/scrape": "true"},
				},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "server",
					Image: "registry.example/inference:v1",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					Env:   []corev1.EnvVar{{Name: "MODEL", Value: "small"}},
				}}},
			},
		},
	}
	return delivery, deployment
}

func TestRenderRollout(t *testing.T) {
	tests := []struct {
		name     string
		strategy string
		policy   func(d *deliveryv1.Delivery) deliveryv1.DeliveryPolicySpec
	}{
		{name: "builtin-canary", strategy: deliveryv1.StrategyCanary, policy: builtinPolicy},
		{name: "builtin-blue-green", strategy: deliveryv1.StrategyBlueGreen, policy: builtinPolicy},
		{
			name:     "canary-gateway-analysis",
			strategy: deliveryv1.StrategyCanary,
			policy: func(*deliveryv1.Delivery) deliveryv1.DeliveryPolicySpec {
				return deliveryv1.DeliveryPolicySpec{RollbackWindow: &deliveryv1.RollbackWindow{Revisions: 5}, Canary: &deliveryv1.CanaryStrategy{
					TrafficRouting: &deliveryv1.TrafficRouting{GatewayAPI: &deliveryv1.GatewayAPIRouting{
						HTTPRoute: "inference", Namespace: "gateways", StableService: "inference-stable", CanaryService: "inference-canary",
					}},
					BackgroundAnalysis: &deliveryv1.Analysis{Templates: []deliveryv1.AnalysisTemplateRef{{Name: "error-rate", ClusterScope: true}}},
					Steps: []deliveryv1.CanaryStep{
						{SetWeight: ptr.To[int32](10)},
						{Analysis: &deliveryv1.Analysis{
							Templates: []deliveryv1.AnalysisTemplateRef{{Name: "success-rate"}},
							Args: []deliveryv1.AnalysisArg{
								{Name: "service", Value: ptr.To("inference-canary")},
								{Name: "hash", ValueFrom: &deliveryv1.AnalysisArgSource{PodTemplateHashValue: ptr.To("Latest")}},
								{Name: "app", ValueFrom: &deliveryv1.AnalysisArgSource{FieldRef: &deliveryv1.AnalysisFieldRef{FieldPath: "metadata.labels['app']"}}},
							},
						}},
						{Pause: &deliveryv1.PauseStep{}},
						{SetWeight: ptr.To[int32](50)},
						{Pause: &deliveryv1.PauseStep{Duration: "5m"}},
					},
				}}
			},
		},
		{
			name:     "blue-green-analysis",
			strategy: deliveryv1.StrategyBlueGreen,
			policy: func(*deliveryv1.Delivery) deliveryv1.DeliveryPolicySpec {
				// No rollback window: every rollback but one to the
				// stable template runs the strategy.
				return deliveryv1.DeliveryPolicySpec{RollbackWindow: &deliveryv1.RollbackWindow{Revisions: 0}, BlueGreen: &deliveryv1.BlueGreenStrategy{
					ActiveService:         "frontend",
					PreviewService:        "frontend-preview",
					AutoPromotionEnabled:  ptr.To(false),
					ScaleDownDelaySeconds: ptr.To[int32](60),
					PrePromotionAnalysis:  &deliveryv1.Analysis{Templates: []deliveryv1.AnalysisTemplateRef{{Name: "smoke-test"}}},
					PostPromotionAnalysis: &deliveryv1.Analysis{Templates: []deliveryv1.AnalysisTemplateRef{{Name: "error-rate"}}},
				}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			delivery, deployment := renderFixture()
			delivery.Spec.Strategy = tt.strategy
			policy := tt.policy(delivery)

			first, err := yaml.Marshal(renderRollout(delivery, deployment, &policy, &deployment.Spec.Template, deliveryv1.TemplateHash(&deployment.Spec.Template)))
			if err != nil {
				t.Fatal(err)
			}
			golden.File(t, filepath.Join("testdata", "render", tt.name+".yaml"), first)

			// Rendering again, from copies, gives the same bytes.
			again, err := yaml.Marshal(renderRollout(delivery.DeepCopy(), deployment.DeepCopy(), policy.DeepCopy(), deployment.Spec.Template.DeepCopy(), deliveryv1.TemplateHash(&deployment.Spec.Template)))
			if err != nil {
				t.Fatal(err)
			}
			if string(again) != string(first) {
				t.Errorf("rendering is not deterministic:\n%s\n---\n%s", first, again)
			}
		})
	}
}

func TestRenderRolloutLeavesInputsAlone(t *testing.T) {
	delivery, deployment := renderFixture()
	before := deployment.DeepCopy()
	policy := builtinPolicy(delivery)
	_ = renderRollout(delivery, deployment, &policy, &deployment.Spec.Template, "h")
	if _, ok := deployment.Spec.Template.Annotations[templateHashAnnotation]; ok {
		t.Fatal("rendering annotated the Deployment's own template")
	}
	if deliveryv1.TemplateHash(&deployment.Spec.Template) != deliveryv1.TemplateHash(&before.Spec.Template) {
		t.Fatal("rendering changed the Deployment's template")
	}
}

func TestTemplateHash(t *testing.T) {
	_, deployment := renderFixture()
	base := &deployment.Spec.Template

	if got := deliveryv1.TemplateHash(base); len(got) != deliveryv1.TemplateHashLength || got != deliveryv1.TemplateHash(base.DeepCopy()) {
		t.Fatalf("templateHash = %q, want %d stable hex digits", got, deliveryv1.TemplateHashLength)
	}

	changes := map[string]func(*corev1.PodTemplateSpec){
		"image":      func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].Image = "registry.example/inference:v2" },
		"env":        func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].Env[0].Value = "large" },
		"label":      func(p *corev1.PodTemplateSpec) { p.Labels["tier"] = "cpu" },
		"annotation": func(p *corev1.PodTemplateSpec) { p.Annotations["kubectl.kubernetes.io/restartedAt"] = "now" },
	}
	for name, change := range changes {
		changed := base.DeepCopy()
		change(changed)
		if deliveryv1.TemplateHash(changed) == deliveryv1.TemplateHash(base) {
			t.Errorf("changing the %s kept the hash", name)
		}
	}

	// Setting the images a template already runs gives the same hash; this
	// is how the stable template is rebuilt from what the Delivery records.
	v2 := withImages(base, map[string]string{"server": "registry.example/inference:v2"})
	if v2.Spec.Containers[0].Image != "registry.example/inference:v2" || base.Spec.Containers[0].Image != "registry.example/inference:v1" {
		t.Fatal("withImages must change a copy only")
	}
	back := withImages(v2, map[string]string{"server": "registry.example/inference:v1", "absent": "x"})
	if deliveryv1.TemplateHash(back) != deliveryv1.TemplateHash(base) {
		t.Fatal("restoring the images did not restore the hash")
	}
}
