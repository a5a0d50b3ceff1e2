package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	"github.com/fluxcd/pkg/apis/meta"
	generator "github.com/fluxcd/pkg/kustomize"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/gitops"
)

// +kubebuilder:rbac:groups=kustomize.toolkit.fluxcd.io,resources=kustomizations,verbs=get;list;watch
// +kubebuilder:rbac:groups=source.toolkit.fluxcd.io,resources=gitrepositories,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get
// +kubebuilder:rbac:groups="",namespace=flux-system,resources=secrets,verbs=get

// Sentinel errors of resolving a Kustomization's Git source.
var (
	// errSourceNotWritable: the Kustomization's source is not one sluice
	// may write to (not a GitRepository, pinned to a tag or commit, or
	// including other repositories); the user must change it.
	errSourceNotWritable = errors.New("sluice cannot write to this source")
	// errSourceSuspended: the Kustomization or its GitRepository is
	// suspended; sluice writes nothing until it is resumed.
	errSourceSuspended = errors.New("suspended")
	// errCredentialsUnavailable: a Secret sluice needs to write to Git is
	// missing or sluice may not read it; the user must change something.
	errCredentialsUnavailable = errors.New("Git credentials unavailable")
)

// gitSource is a Kustomization's Git source as sluice writes to it: the
// GitRepository, the branch Flux follows, the credentials, and how Flux
// builds the Kustomization's path.
type gitSource struct {
	ks     *kustomizev1.Kustomization
	repo   *sourcev1.GitRepository
	src    gitops.Source
	branch string
	// build is read through kustomization, which resolves its variables.
	build gitops.Kustomization
}

// resolveGitSource resolves the Kustomization's GitRepository, the branch it
// follows and its credentials.
func resolveGitSource(ctx context.Context, c client.Reader, ks *kustomizev1.Kustomization) (*gitSource, error) {
	if ks.Spec.Suspend {
		return nil, fmt.Errorf("Kustomization %s/%s is %w: sluice writes to its source once it is resumed", ks.Namespace, ks.Name, errSourceSuspended)
	}
	key := sourceOf(ks)
	if key.Name == "" {
		return nil, fmt.Errorf("%w: Kustomization %s/%s applies a %s; sluice writes only to GitRepositories", errSourceNotWritable, ks.Namespace, ks.Name, ks.Spec.SourceRef.Kind)
	}
	ns := key.Namespace
	repo := &sourcev1.GitRepository{}
	if err := c.Get(ctx, key, repo); err != nil {
		return nil, fmt.Errorf("GitRepository %s: %w", key, err)
	}
	name := "GitRepository " + key.String()
	if repo.Spec.Suspend {
		return nil, fmt.Errorf("%s is %w: sluice writes to it once it is resumed", name, errSourceSuspended)
	}
	branch, err := followedBranch(repo)
	if err != nil {
		return nil, err
	}
	if len(repo.Spec.Include) > 0 {
		// NOTE: the artifact Flux builds holds the included
		// repositories' files too, which sluice's clone does not: it
		// cannot build what Flux builds, nor write where they come from.
		return nil, fmt.Errorf("%w: %s includes other repositories (spec.include), whose files sluice cannot build or edit from its clone; apply the Deliveries' apps from a GitRepository without includes",
			errSourceNotWritable, name)
	}

	s := &gitSource{ks: ks, repo: repo, branch: branch, src: gitops.Source{URL: repo.Spec.URL, Branch: branch}}
	if repo.Spec.Timeout != nil {
		s.src.Timeout = repo.Spec.Timeout.Duration
	}
	if repo.Spec.SecretRef != nil {
		secret, err := readSecret(ctx, c, ns, repo.Spec.SecretRef.Name, name+"'s spec.secretRef")
		if err != nil {
			return nil, err
		}
		s.src.Credentials = credentialsFrom(secret)
	}
	s.build = gitops.Kustomization{Path: ks.Spec.Path, Flux: ks}
	if repo.Spec.Ignore != nil {
		s.build.Ignore = *repo.Spec.Ignore
	}
	return s, nil
}

// kustomization is how Flux builds the Kustomization's path, its postBuild
// variables resolved. They are read when sluice is about to write, once per
// source, not at every reconcile.
func (s *gitSource) kustomization(ctx context.Context, c client.Client) (gitops.Kustomization, error) {
	if s.ks.Spec.PostBuild != nil && s.build.Vars == nil {
		vars, err := postBuildVariables(ctx, c, s.ks)
		if err != nil {
			return gitops.Kustomization{}, err
		}
		s.build.Vars = vars
	}
	return s.build, nil
}

// followedBranch returns the branch a GitRepository follows; one pinned to
// a tag, a semver range, a commit or a reference name follows none that
// sluice may push to.
func followedBranch(repo *sourcev1.GitRepository) (string, error) {
	ref := repo.Spec.Reference
	if ref == nil {
		// source-controller checks out master when no reference is set.
		return "master", nil
	}
	var pinned string
	switch {
	case ref.Commit != "":
		pinned = "commit " + ref.Commit
	case ref.Name != "":
		pinned = "reference " + ref.Name
	case ref.SemVer != "":
		pinned = "semver range " + ref.SemVer
	case ref.Tag != "":
		pinned = "tag " + ref.Tag
	}
	if pinned != "" {
		return "", fmt.Errorf("%w: GitRepository %s/%s is pinned to %s; sluice cannot write to a source pinned to a tag or commit: have it follow a branch (spec.ref.branch)",
			errSourceNotWritable, repo.Namespace, repo.Name, pinned)
	}
	if ref.Branch == "" {
		return "master", nil
	}
	return ref.Branch, nil
}

// postBuildVariables resolves the variables the Kustomization's postBuild
// substitutes, as kustomize-controller does: its ConfigMaps and Secrets,
// then its inline substitute.
func postBuildVariables(ctx context.Context, c client.Client, ks *kustomizev1.Kustomization) (map[string]string, error) {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ks)
	if err != nil {
		return nil, err
	}
	vars, err := generator.LoadVariables(ctx, c, unstructured.Unstructured{Object: obj})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("%w: the postBuild.substituteFrom of Kustomization %s/%s: %v; bind the ClusterRole sluice-secret-reader to sluice's ServiceAccount in namespace %s",
				errCredentialsUnavailable, ks.Namespace, ks.Name, err, ks.Namespace)
		}
		return nil, fmt.Errorf("the postBuild.substituteFrom of Kustomization %s/%s: %w", ks.Namespace, ks.Name, err)
	}
	if vars == nil {
		vars = map[string]string{}
	}
	for k, v := range ks.Spec.PostBuild.Substitute {
		vars[k] = strings.ReplaceAll(v, "\n", "")
	}
	return vars, nil
}

// credentialsFrom reads a Secret in Flux's GitRepository format.
func credentialsFrom(s *corev1.Secret) gitops.Credentials {
	return gitops.Credentials{
		Username:    string(s.Data["username"]),
		Password:    string(s.Data["password"]),
		BearerToken: string(s.Data["bearerToken"]),
		Identity:    s.Data["identity"],
		KnownHosts:  s.Data["known_hosts"],
		CA:          append(s.Data["ca.crt"], s.Data["caFile"]...),
	}
}

// gitSettings is how sluice writes for one policy.
type gitSettings struct {
	src                    gitops.Source
	branch                 string
	author                 gitops.Signature
	signingKey, passphrase []byte
}

// settingsFor applies a policy's Git write-back settings to the source:
// push branch, write credentials, author and signing key.
func (s *gitSource) settingsFor(ctx context.Context, c client.Reader, namespace string, policy *deliveryv1.DeliveryPolicySpec) (gitSettings, error) {
	g := gitSettings{src: s.src, branch: s.branch, author: gitops.Signature{
		Name:  cmp.Or(policy.Git.Commit.Author.Name, "sluice"),
		Email: cmp.Or(policy.Git.Commit.Author.Email, "sluice@sluice.dev"),
	}}
	if b := policy.Git.Push.Branch; b != "" {
		g.branch = b
	}
	if ref := policy.Git.Push.SecretRef; ref != nil {
		secret, err := readSecret(ctx, c, namespace, ref.Name, "the DeliveryPolicy's spec.git.push.secretRef")
		if err != nil {
			return g, err
		}
		g.src.Credentials = credentialsFrom(secret)
	}
	if key := policy.Git.Commit.SigningKey; key != nil {
		secret, err := readSecret(ctx, c, namespace, key.SecretRef.Name, "the DeliveryPolicy's spec.git.commit.signingKey.secretRef")
		if err != nil {
			return g, err
		}
		g.signingKey, g.passphrase = secret.Data["git.asc"], secret.Data["passphrase"]
	}
	return g, nil
}

// requestReconcile asks Flux to fetch the source now rather than at its
// next interval. The Kustomizations follow on their own: kustomize-controller
// applies again each Kustomization of a GitRepository whose artifact
// revision changed.
//
// NOTE: asking a Kustomization as well, as `flux reconcile ks` does without
// --with-source, would have Flux apply the revision it has, before the
// source fetched the new one, and then the new one: one more pass over
// every Kustomization of the commit.
func (s *gitSource) requestReconcile(ctx context.Context, c client.Client) error {
	if err := c.Patch(ctx, s.repo.DeepCopy(), reconcileRequest()); err != nil {
		return fmt.Errorf("requesting a reconcile of GitRepository %s/%s: %w", s.repo.Namespace, s.repo.Name, err)
	}
	return nil
}

// reconcileRequest is the patch that asks a Flux object to reconcile now,
// as `flux reconcile` does.
func reconcileRequest() client.Patch {
	now := time.Now().Format(time.RFC3339Nano)
	return client.RawPatch(types.MergePatchType,
		[]byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, meta.ReconcileRequestAnnotation, now)))
}

// readSecret reads a Secret that what names; a missing Secret, or one sluice
// may not read, is an errCredentialsUnavailable that says what to do.
func readSecret(ctx context.Context, c client.Reader, namespace, name, what string) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret)
	switch {
	case err == nil:
		return secret, nil
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("%w: %s: Secret %s/%s not found", errCredentialsUnavailable, what, namespace, name)
	case apierrors.IsForbidden(err):
		return nil, fmt.Errorf("%w: %s: sluice may not read Secret %s/%s; bind the ClusterRole sluice-secret-reader to sluice's ServiceAccount in namespace %s (kubectl -n %s create rolebinding sluice-secret-reader --clusterrole=sluice-secret-reader --serviceaccount=<sluice's namespace>:sluice)",
			errCredentialsUnavailable, what, namespace, name, namespace, namespace)
	default:
		return nil, fmt.Errorf("%s: %w", what, err)
	}
}

// sourceOf names the GitRepository that ks applies; empty when its source
// is of another kind.
func sourceOf(ks *kustomizev1.Kustomization) types.NamespacedName {
	ref := ks.Spec.SourceRef
	if ref.Kind != sourcev1.GitRepositoryKind {
		return types.NamespacedName{}
	}
	return types.NamespacedName{Namespace: cmp.Or(ref.Namespace, ks.Namespace), Name: ref.Name}
}
