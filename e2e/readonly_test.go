package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/e2e/stack"
)

const ledgerManifests = `apiVersion: v1
kind: Namespace
metadata:
  name: ledger
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ledger
  annotations:
    sluice.dev/strategy: canary
    sluice.dev/policy: ledger
spec:
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.example/ledger:v1
---
apiVersion: delivery.sluice.dev/v1alpha1
kind: Delivery
metadata:
  name: web
  namespace: ledger
spec:
  deploymentRef:
    name: web
  strategy: canary
  policyRef:
    name: ledger
  replicas: 1
`

const ledgerPolicy = `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: ledger
  namespace: ledger
spec:
  canary:
    steps:
      - setWeight: 50
      - pause: {}
`

// TestReadOnlySourceStalls syncs a repository through credentials that may
// only read: sluice cannot record the stable template, and the Delivery
// stalls with a message naming the fix. Giving the policy credentials that
// may push un-stalls it.
func TestReadOnlySourceStalls(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()

	repo := newGitRepo(t, "ledger")
	repo.write(map[string]string{"apps/ledger/app.yaml": ledgerManifests, "apps/ledger/policy.yaml": ledgerPolicy})
	repo.commitAndPush("Add the ledger")
	fluxSync(t, "ledger", env.Git.RepositoryURL("ledger"), "./apps/ledger")
	readOnly := &corev1.Secret{}
	update(g, readOnly, func() {
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: "flux-system", Name: "ledger-auth"}, readOnly)).To(Succeed())
		readOnly.Data = map[string][]byte{"username": []byte(env.Git.ReadOnlyUsername), "password": []byte(env.Git.ReadOnlyPassword)}
	})

	delivery := &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "web"}}
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(conditions.IsStalled(d)).To(BeTrue())
		g.Expect(conditions.GetReason(d, meta.StalledCondition)).To(Equal(deliveryv1.GitPushRefusedReason))
		g.Expect(conditions.GetMessage(d, meta.StalledCondition)).To(ContainSubstring("spec.git.push.secretRef"))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	kstatus().WithT(g).CheckErr(ctx, getObj(g, delivery.DeepCopy()))
	g.Expect(repo.git("", "ls-remote", "origin", "refs/heads/main")).To(HavePrefix(repo.git("", "rev-parse", "HEAD")))

	// The fix the message names: credentials that may push, in the policy.
	g.Expect(k8sClient.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "ledger-writer"},
		StringData: map[string]string{"username": env.Git.Username, "password": env.Git.Password},
	})).To(Succeed())
	repo.write(map[string]string{"apps/ledger/policy.yaml": ledgerPolicy + "  git:\n    push:\n      secretRef:\n        name: ledger-writer\n"})
	repo.commitAndPush("Let sluice push with its own credentials")

	// sluice may read Secrets only in flux-system until it is allowed in
	// the app's namespace: the Delivery stalls and says how.
	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(conditions.GetReason(d, meta.StalledCondition)).To(Equal(deliveryv1.GitCredentialsUnavailableReason))
		g.Expect(conditions.GetMessage(d, meta.StalledCondition)).To(ContainSubstring(
			"sluice may not read Secret ledger/ledger-writer; bind the ClusterRole sluice-secret-reader to sluice's ServiceAccount in namespace ledger"))
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
	g.Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "sluice-secret-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "sluice-secret-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: stack.SluiceNamespace, Name: "sluice"}},
	})).To(Succeed())
	// As `flux reconcile` does: ask for a reconcile now rather than at the
	// next retry.
	d := getObj(g, delivery.DeepCopy())
	update(g, d, func() {
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations[meta.ReconcileRequestAnnotation] = time.Now().Format(time.RFC3339Nano)
	})

	g.Eventually(func(g Gomega) {
		d := getObj(g, delivery.DeepCopy())
		g.Expect(conditions.IsStalled(d)).To(BeFalse())
		g.Expect(conditions.IsReady(d)).To(BeTrue())
		g.Expect(d.Spec.Promotion.Stable).NotTo(BeNil())
	}, 2*time.Minute, 100*time.Millisecond).Should(Succeed())
}
