package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	rolloutsv1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	generator "github.com/fluxcd/pkg/kustomize"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// Labels kustomize-controller puts on what it applies.
const (
	kustomizationNameLabel      = "kustomize.toolkit.fluxcd.io/name"
	kustomizationNamespaceLabel = "kustomize.toolkit.fluxcd.io/namespace"
)

// cluster reads the cluster through the user's kubeconfig.
type cluster struct {
	client.Client
	namespace string
}

func (o *options) cluster() (*cluster, error) {
	config, err := o.kube.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, deliveryv1.AddToScheme, sourcev1.AddToScheme, kustomizev1.AddToScheme, rolloutsv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	c, err := client.New(config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	ns, _, err := o.kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, err
	}
	return &cluster{Client: c, namespace: ns}, nil
}

// delivery reads the Delivery name in the command's namespace.
func (c *cluster) delivery(ctx context.Context, name string) (*deliveryv1.Delivery, error) {
	d := &deliveryv1.Delivery{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: c.namespace, Name: name}, d); err != nil {
		return nil, fmt.Errorf("Delivery %s/%s: %w", c.namespace, name, err)
	}
	return d, nil
}

// source is the Flux objects that apply a Delivery: its Kustomization and
// the Kustomization's GitRepository.
type source struct {
	ks   *kustomizev1.Kustomization
	repo *sourcev1.GitRepository
}

// sourceOf finds the Kustomization that applied d (from the labels Flux
// puts on it) and its GitRepository.
func (c *cluster) sourceOf(ctx context.Context, d *deliveryv1.Delivery) (*source, error) {
	name, ns := d.Labels[kustomizationNameLabel], d.Labels[kustomizationNamespaceLabel]
	if name == "" || ns == "" {
		return nil, fmt.Errorf("Delivery %s/%s was not applied by a Flux Kustomization (it has no %s label)", d.Namespace, d.Name, kustomizationNameLabel)
	}
	s := &source{ks: &kustomizev1.Kustomization{}}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s.ks); err != nil {
		return nil, fmt.Errorf("Kustomization %s/%s: %w", ns, name, err)
	}
	ref := s.ks.Spec.SourceRef
	if ref.Kind != sourcev1.GitRepositoryKind {
		return s, fmt.Errorf("Kustomization %s/%s applies a %s, not a GitRepository", ns, name, ref.Kind)
	}
	if ref.Namespace != "" {
		ns = ref.Namespace
	}
	s.repo = &sourcev1.GitRepository{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, s.repo); err != nil {
		return s, fmt.Errorf("GitRepository %s/%s: %w", ns, ref.Name, err)
	}
	return s, nil
}

// branch is the branch the GitRepository follows.
func (s *source) branch() (string, error) {
	ref := s.repo.Spec.Reference
	switch {
	case ref == nil:
		return "master", nil
	case ref.Branch != "" && ref.Tag == "" && ref.SemVer == "" && ref.Commit == "" && ref.Name == "":
		return ref.Branch, nil
	}
	return "", fmt.Errorf("GitRepository %s/%s follows no branch (it is pinned to a tag, semver range, commit or reference): there is nothing to commit to", s.repo.Namespace, s.repo.Name)
}

// requestReconcile asks a Flux-style controller to reconcile obj now, as
// `flux reconcile` does: it sets reconcile.fluxcd.io/requestedAt and, with a
// timeout, waits until status.lastHandledReconcileAt says it was handled,
// or done, when set, holds.
func (c *cluster) requestReconcile(ctx context.Context, obj client.Object, done func() bool, timeout time.Duration) error {
	kind := fmt.Sprintf("%T", obj)
	switch obj.(type) {
	case *sourcev1.GitRepository:
		kind = "GitRepository"
	case *kustomizev1.Kustomization:
		kind = "Kustomization"
	case *deliveryv1.Delivery:
		kind = "Delivery"
	}
	requested := time.Now().Format(time.RFC3339Nano)
	patch := client.RawPatch(types.MergePatchType,
		[]byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, meta.ReconcileRequestAnnotation, requested)))
	if err := c.Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("requesting a reconcile of %s %s/%s: %w", kind, obj.GetNamespace(), obj.GetName(), err)
	}
	if timeout <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err == nil && (handled(obj) == requested || (done != nil && done())) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s/%s did not handle the reconcile request within %s", kind, obj.GetNamespace(), obj.GetName(), timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// reconcileSource asks Flux to fetch the GitRepository and apply the
// Kustomization now, as `flux reconcile kustomization --with-source` does.
// It waits for the GitRepository to have fetched commit (its newest when
// commit is ""), then for the Kustomization to have applied that revision:
// its reconcile done, or its health checks of that revision running (a
// Kustomization that waits for a canary at a gate would otherwise hold the
// command until its timeout).
func (c *cluster) reconcileSource(ctx context.Context, s *source, commit string, timeout time.Duration, progress func(string)) error {
	progress(fmt.Sprintf("annotating GitRepository %s/%s", s.repo.Namespace, s.repo.Name))
	if err := c.requestReconcile(ctx, s.repo, func() bool {
		return commit != "" && strings.Contains(artifactRevision(s.repo), commit)
	}, timeout); err != nil {
		return err
	}
	revision := artifactRevision(s.repo)
	progress(fmt.Sprintf("fetched revision %s", revision))
	progress(fmt.Sprintf("annotating Kustomization %s/%s", s.ks.Namespace, s.ks.Name))
	checking := "Running health checks for revision " + revision
	if err := c.requestReconcile(ctx, s.ks, func() bool {
		if s.ks.Status.LastAppliedRevision == revision {
			return true
		}
		r := apimeta.FindStatusCondition(s.ks.Status.Conditions, meta.ReconcilingCondition)
		return r != nil && r.Status == metav1.ConditionTrue && strings.HasPrefix(r.Message, checking)
	}, timeout); err != nil {
		return err
	}
	if s.ks.Status.LastAppliedRevision == revision {
		progress(fmt.Sprintf("applied revision %s", revision))
	} else {
		progress(fmt.Sprintf("applied revision %s; Flux checks its health", revision))
	}
	return nil
}

// handled is the status.lastHandledReconcileAt of a Flux-style object.
func handled(obj client.Object) string {
	switch o := obj.(type) {
	case *sourcev1.GitRepository:
		return o.Status.LastHandledReconcileAt
	case *kustomizev1.Kustomization:
		return o.Status.LastHandledReconcileAt
	case *deliveryv1.Delivery:
		return o.Status.LastHandledReconcileAt
	}
	return ""
}

// artifactRevision is the revision of the GitRepository's artifact, if any.
func artifactRevision(repo *sourcev1.GitRepository) string {
	if repo == nil || repo.Status.Artifact == nil {
		return ""
	}
	return repo.Status.Artifact.Revision
}

// postBuildVariables are the Kustomization's postBuild variables, read as
// kustomize-controller reads them, with the user's access to the cluster.
func (c *cluster) postBuildVariables(ctx context.Context, s *source) (map[string]string, error) {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s.ks)
	if err != nil {
		return nil, err
	}
	vars, err := generator.LoadVariables(ctx, c.Client, unstructured.Unstructured{Object: obj})
	if err != nil {
		return nil, fmt.Errorf("the postBuild.substituteFrom of Kustomization %s/%s: %w", s.ks.Namespace, s.ks.Name, err)
	}
	if vars == nil {
		vars = map[string]string{}
	}
	for k, v := range s.ks.Spec.PostBuild.Substitute {
		vars[k] = strings.ReplaceAll(v, "\n", "")
	}
	return vars, nil
}
