package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

// cluster reads what runs. The demo creates Flux's GitRepository and
// Kustomization (what `flux create` would), and otherwise only reads:
// Deliveries and Rollouts change only through Git.
type cluster struct {
	client.Client
}

func newCluster(cfg *rest.Config) (*cluster, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, deliveryv1.AddToScheme, sourcev1.AddToScheme, kustomizev1.AddToScheme, rolloutsv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &cluster{c}, nil
}

// fluxSync creates what `flux create secret git`, `flux create source git`
// and `flux create kustomization --prune` would: Flux fetches main every two
// seconds and applies appsPath.
func (c *cluster) fluxSync(ctx context.Context, repoURL, username, password string) error {
	ns := stack.FluxNamespace
	objs := []client.Object{
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: repoName + "-auth"},
			StringData: map[string]string{"username": username, "password": password},
		},
		&sourcev1.GitRepository{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: repoName},
			Spec: sourcev1.GitRepositorySpec{
				URL:       repoURL,
				Interval:  metav1.Duration{Duration: 2 * time.Second},
				Reference: &sourcev1.GitRepositoryRef{Branch: "main"},
				SecretRef: &meta.LocalObjectReference{Name: repoName + "-auth"},
			},
		},
		&kustomizev1.Kustomization{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: repoName},
			Spec: kustomizev1.KustomizationSpec{
				Interval:      metav1.Duration{Duration: time.Minute},
				RetryInterval: &metav1.Duration{Duration: 5 * time.Second},
				Path:          "./" + appsPath,
				Prune:         true,
				SourceRef:     kustomizev1.CrossNamespaceSourceReference{Kind: sourcev1.GitRepositoryKind, Name: repoName},
			},
		},
	}
	for _, obj := range objs {
		if err := c.Create(ctx, obj); err != nil {
			return err
		}
	}
	return nil
}

func key(name string) client.ObjectKey { return client.ObjectKey{Namespace: namespace, Name: name} }

// get reads an object of the demo's namespace; found is false when it does
// not exist.
func (c *cluster) get(ctx context.Context, name string, obj client.Object) (found bool, err error) {
	err = c.Get(ctx, key(name), obj)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// appliedRevision is the Git revision the Kustomization last applied.
func (c *cluster) appliedRevision(ctx context.Context) (string, error) {
	ks := &kustomizev1.Kustomization{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.FluxNamespace, Name: repoName}, ks); err != nil {
		return "", err
	}
	return ks.Status.LastAppliedRevision, nil
}

// deploymentAvailable checks that a Deployment wants and has replicas
// available.
func (c *cluster) deploymentAvailable(ctx context.Context, name string, replicas int32) error {
	d := &appsv1.Deployment{}
	if found, err := c.get(ctx, name, d); !found {
		return notFound("Deployment", name, err)
	}
	if got := ptr.Deref(d.Spec.Replicas, 1); got != replicas {
		return fmt.Errorf("Deployment %s wants %d replicas, not %d", name, got, replicas)
	}
	if d.Status.AvailableReplicas != replicas {
		return fmt.Errorf("Deployment %s has %d of %d replicas available", name, d.Status.AvailableReplicas, replicas)
	}
	return nil
}

// delivery returns the Delivery of an app.
func (c *cluster) delivery(ctx context.Context, app string) (*deliveryv1.Delivery, error) {
	d := &deliveryv1.Delivery{}
	if found, err := c.get(ctx, app, d); !found {
		return nil, notFound("Delivery", app, err)
	}
	return d, nil
}

// deliveryIn checks that an app's Delivery is in phase and returns it.
func (c *cluster) deliveryIn(ctx context.Context, app string, phase deliveryv1.DeliveryPhase) (*deliveryv1.Delivery, error) {
	d, err := c.delivery(ctx, app)
	if err != nil {
		return nil, err
	}
	if d.Status.Phase != phase {
		return nil, fmt.Errorf("Delivery %s is %s, not %s", app, describeDelivery(d), phase)
	}
	return d, nil
}

// servedByRollout checks that an app's Rollout serves all its replicas and
// its Deployment is scaled to zero: the handover is done.
func (c *cluster) servedByRollout(ctx context.Context, app string, replicas int32) error {
	r := &rolloutsv1.Rollout{}
	if found, err := c.get(ctx, app, r); !found {
		return notFound("Rollout", app, err)
	}
	if r.Status.AvailableReplicas != replicas {
		return fmt.Errorf("Rollout %s has %d of %d replicas available", app, r.Status.AvailableReplicas, replicas)
	}
	d := &appsv1.Deployment{}
	if found, err := c.get(ctx, app, d); !found {
		return notFound("Deployment", app, err)
	}
	if got := ptr.Deref(d.Spec.Replicas, 1); got != 0 {
		return fmt.Errorf("Deployment %s still wants %d replicas", app, got)
	}
	return nil
}

// gone checks that an object no longer exists.
func (c *cluster) gone(ctx context.Context, kind, name string, obj client.Object) error {
	found, err := c.get(ctx, name, obj)
	if err != nil {
		return err
	}
	if found {
		return fmt.Errorf("%s %s still exists", kind, name)
	}
	return nil
}

// podImages returns the images of an app's running pods, counted.
func (c *cluster) podImages(ctx context.Context, app string) (map[string]int, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{"app": app}); err != nil {
		return nil, err
	}
	images := map[string]int{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			images[p.Spec.Containers[0].Image]++
		}
	}
	return images, nil
}

func notFound(kind, name string, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s %s/%s does not exist", kind, namespace, name)
}

func describeDelivery(d *deliveryv1.Delivery) string {
	s := string(d.Status.Phase)
	if s == "" {
		s = "new"
	}
	if d.DeletionTimestamp != nil && d.Status.Phase != deliveryv1.PhaseHandingBack {
		s += " (deleting)"
	}
	if step := d.Status.CurrentStep; step != nil {
		s += fmt.Sprintf(", step %d", *step)
	}
	if w := d.Status.CanaryWeight; w != nil {
		s += fmt.Sprintf(", weight %d%%", *w)
	}
	return s
}

// progress is one line on an app: its Delivery's phase, step and canary
// weight, and the available replicas of its Rollout and Deployment.
func (c *cluster) progress(ctx context.Context, app string) string {
	parts := []string{fmt.Sprintf("%-6s", app)}
	d := &deliveryv1.Delivery{}
	if found, err := c.get(ctx, app, d); err != nil {
		parts = append(parts, "Delivery ?")
	} else if found {
		parts = append(parts, "Delivery "+describeDelivery(d))
	}
	r := &rolloutsv1.Rollout{}
	if found, err := c.get(ctx, app, r); err != nil {
		parts = append(parts, "Rollout ?")
	} else if found {
		phase := string(r.Status.Phase)
		if phase == "" {
			phase = "new"
		}
		parts = append(parts, fmt.Sprintf("Rollout %s, wants %d, %d available", phase, ptr.Deref(r.Spec.Replicas, 1), r.Status.AvailableReplicas))
	}
	dep := &appsv1.Deployment{}
	if found, err := c.get(ctx, app, dep); err != nil {
		parts = append(parts, "Deployment ?")
	} else if found {
		parts = append(parts, fmt.Sprintf("Deployment wants %d, %d available", ptr.Deref(dep.Spec.Replicas, 1), dep.Status.AvailableReplicas))
	}
	if len(parts) == 1 {
		parts = append(parts, "not applied yet")
	}
	return strings.Join(parts, " · ")
}
