package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
	"github.com/sluice-dev/sluice/controllers"
	"github.com/sluice-dev/sluice/e2e/stack"
)

// TestNoSecretLeaks has sluice write with every kind of secret a Flux user
// gives it: a password in a Secret, a bearer token, a password written in
// the GitRepository's URL, an SSH key encrypted with a passphrase, and an
// OpenPGP signing key encrypted with another. It then searches everything
// sluice writes or keeps for each of them: its log at debug level, the
// events, the conditions of every Delivery, Kustomization and
// GitRepository, the commit messages of every repository, and the files of
// its working copies. It makes its own writes, so it holds whichever
// scenarios ran before it; running last, it searches what they left too.
func TestNoSecretLeaks(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	secrets := map[string]string{
		"the Git password":           env.Git.Password,
		"the read-only Git password": env.Git.ReadOnlyPassword,
		"the bearer token":           env.Git.Token,
	}

	// A bearer token in the GitRepository's Secret.
	app := func(ns string, annotations ...string) map[string]string {
		return map[string]string{"apps/app.yaml": webApp(ns, 1, "registry.example/web:v1",
			append([]string{"sluice.dev/strategy: canary"}, annotations...)...)}
	}
	tokenRepo := newGitRepo(t, "leak-token")
	tokenRepo.write(app("leak-token"))
	tokenRepo.commitAndPush("Add web")
	g.Expect(k8sClient.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: stack.FluxNamespace, Name: "leak-token-bearer"},
		StringData: map[string]string{"bearerToken": env.Git.Token},
	})).To(Succeed())
	fluxSyncCustom(t, "leak-token", "./apps", func(s *sourcev1.GitRepository, _ *kustomizev1.Kustomization) {
		s.Spec.SecretRef.Name = "leak-token-bearer"
	})

	// The password written in the GitRepository's URL, no Secret.
	urlRepo := newGitRepo(t, "leak-url")
	urlRepo.write(app("leak-url"))
	urlRepo.commitAndPush("Add web")
	fluxSyncCustom(t, "leak-url", "./apps", func(s *sourcev1.GitRepository, _ *kustomizev1.Kustomization) {
		u, err := url.Parse(s.Spec.URL)
		g.Expect(err).NotTo(HaveOccurred())
		u.User = url.UserPassword(env.Git.Username, env.Git.Password)
		s.Spec.URL, s.Spec.SecretRef = u.String(), nil
	})

	// An SSH key encrypted with a passphrase.
	public, private, err := ed25519.GenerateKey(rand.Reader)
	g.Expect(err).NotTo(HaveOccurred())
	sshPublic, err := ssh.NewPublicKey(public)
	g.Expect(err).NotTo(HaveOccurred())
	passphrase := stack.RandomSecret()
	block, err := ssh.MarshalPrivateKeyWithPassphrase(private, "", []byte(passphrase))
	g.Expect(err).NotTo(HaveOccurred())
	identity := pem.EncodeToMemory(block)
	sshServer, err := stack.StartSSHServer(env.Git.Root, sshPublic)
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = sshServer.Close() })
	secrets["the SSH key's passphrase"] = passphrase
	secrets["the SSH key"] = keyLine(identity)
	sshRepo := newGitRepo(t, "leak-ssh")
	sshRepo.write(app("leak-ssh"))
	sshRepo.commitAndPush("Add web")
	g.Expect(k8sClient.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: stack.FluxNamespace, Name: "leak-ssh-identity"},
		Data: map[string][]byte{
			"identity": identity, "password": []byte(passphrase), "known_hosts": []byte(sshServer.KnownHosts),
		},
	})).To(Succeed())
	fluxSyncCustom(t, "leak-ssh", "./apps", func(s *sourcev1.GitRepository, _ *kustomizev1.Kustomization) {
		s.Spec.URL = sshServer.RepositoryURL("leak-ssh")
		s.Spec.SecretRef.Name = "leak-ssh-identity"
	})

	// An OpenPGP signing key encrypted with a passphrase, in the policy's
	// namespace.
	signingPassphrase := stack.RandomSecret()
	armored := encryptedSigningKey(t, signingPassphrase)
	secrets["the signing key's passphrase"] = signingPassphrase
	secrets["the signing key"] = keyLine(armored)
	g.Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "leak-signed"}})).To(Succeed())
	g.Expect(k8sClient.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "leak-signed", Name: "signing-key"},
		Data:       map[string][]byte{"git.asc": armored, "passphrase": []byte(signingPassphrase)},
	})).To(Succeed())
	g.Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: "leak-signed", Name: "sluice-secret-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "sluice-secret-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: stack.SluiceNamespace, Name: "sluice"}},
	})).To(Succeed())
	signedRepo := newGitRepo(t, "leak-signed")
	files := app("leak-signed", "sluice.dev/policy: signed")
	files["apps/policy.yaml"] = `apiVersion: delivery.sluice.dev/v1alpha1
kind: DeliveryPolicy
metadata:
  name: signed
  namespace: leak-signed
spec:
  canary:
    steps:
      - setWeight: 50
  git:
    commit:
      signingKey:
        secretRef:
          name: signing-key
`
	signedRepo.write(files)
	signedRepo.commitAndPush("Add web")
	fluxSyncCustom(t, "leak-signed", "./apps", nil)

	// Each wrote its adoption with its secret; the signed one is signed.
	for _, r := range []*gitRepo{tokenRepo, urlRepo, sshRepo, signedRepo} {
		ns := filepath.Base(r.dir)
		g.Eventually(func(g Gomega) {
			getObj(g, &deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}})
			r.git("", "fetch", "--quiet", "origin")
			g.Expect(r.git("", "log", "origin/main", "--format=%B")).To(ContainSubstring(
				fmt.Sprintf("%s: %s/web\n%s: adopt", controllers.TrailerDelivery, ns, controllers.TrailerAction)))
		}, 2*time.Minute, 200*time.Millisecond).Should(Succeed(), "the adoption of %s/web", ns)
	}
	g.Expect(signedRepo.git("", "log", "-1", "--format=%G?", "--grep="+controllers.TrailerAction+": adopt", "origin/main")).
		NotTo(Equal("N"), "the adoption through the signing policy is not signed")

	places := leakPlaces(t)
	for where, text := range places {
		for what, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s appears in %s", what, where)
			}
		}
	}
}

// leakPlaces returns, by where they come from, the texts sluice wrote or
// keeps.
func leakPlaces(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	sluiceLog, err := os.ReadFile(filepath.Join(env.LogDir(), "sluice.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(sluiceLog, []byte(`"level":"debug"`)) {
		t.Fatal("sluice's log holds no debug lines: it must run at debug level for this search")
	}
	places := map[string]string{"sluice's log": string(sluiceLog)}

	var b strings.Builder
	var events corev1.EventList
	if err := k8sClient.List(ctx, &events); err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		b.WriteString(e.Message + "\n")
	}
	places["events"] = b.String()

	b.Reset()
	var deliveries deliveryv1.DeliveryList
	var kustomizations kustomizev1.KustomizationList
	var sources sourcev1.GitRepositoryList
	for _, list := range []client.ObjectList{&deliveries, &kustomizations, &sources} {
		if err := k8sClient.List(ctx, list); err != nil {
			t.Fatal(err)
		}
	}
	var conditions []metav1.Condition
	for _, d := range deliveries.Items {
		conditions = append(conditions, d.Status.Conditions...)
	}
	for _, k := range kustomizations.Items {
		conditions = append(conditions, k.Status.Conditions...)
	}
	for _, s := range sources.Items {
		conditions = append(conditions, s.Status.Conditions...)
	}
	for _, c := range conditions {
		b.WriteString(c.Message + "\n")
	}
	places["conditions"] = b.String()

	repos, err := filepath.Glob(filepath.Join(env.Git.Root, "*.git"))
	if err != nil || len(repos) == 0 {
		t.Fatalf("no repositories to search: %v", err)
	}
	for _, repo := range repos {
		out, err := exec.Command("git", "-C", repo, "log", "--all", "--format=%B").CombinedOutput()
		if err != nil {
			t.Fatalf("git log in %s: %v\n%s", repo, err, out)
		}
		places["commit messages of "+filepath.Base(repo)] = string(out)
	}

	files := 0
	err = filepath.WalkDir(sluiceGitDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		places[p] = string(data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("sluice's working copies in %s hold no files", sluiceGitDir())
	}
	return places
}

// keyLine is a line from the middle of a PEM or armored key: any part of
// it in the open is a leak.
func keyLine(key []byte) string {
	lines := strings.Split(strings.TrimSpace(string(key)), "\n")
	return lines[len(lines)/2]
}

// encryptedSigningKey is an armored OpenPGP private key encrypted with
// passphrase.
func encryptedSigningKey(t *testing.T, passphrase string) []byte {
	t.Helper()
	entity, err := openpgp.NewEntity("sluice", "", "sluice@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := entity.EncryptPrivateKeys([]byte(passphrase), nil); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w, err := armor.Encode(&out, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := entity.SerializePrivateWithoutSigning(w, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
