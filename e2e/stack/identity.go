package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SluiceNamespace is where sluice's ServiceAccount lives.
const SluiceNamespace = "sluice-system"

// sluiceKubeconfig creates sluice's ServiceAccount and RBAC exactly as its
// install renders them (kubectl kustomize of Options.InstallDir: the roles
// generated from sluice's markers and their bindings), and writes a
// kubeconfig with a token of that ServiceAccount, so that a permission
// missing from the markers fails the end-to-end suite.
func (s *Stack) sluiceKubeconfig(ctx context.Context) (string, error) {
	clientset, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		return "", err
	}
	if err := s.installIdentity(ctx); err != nil {
		return "", err
	}
	token, err := clientset.CoreV1().ServiceAccounts(SluiceNamespace).CreateToken(ctx, "sluice", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](7 * 24 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}

	admin, err := clientcmd.LoadFromFile(s.Kubeconfig)
	if err != nil {
		return "", err
	}
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["sluice"] = admin.Clusters["sluice"]
	kubeconfig.AuthInfos["sluice"] = &clientcmdapi.AuthInfo{Token: token.Status.Token}
	kubeconfig.Contexts["sluice"] = &clientcmdapi.Context{Cluster: "sluice", AuthInfo: "sluice"}
	kubeconfig.CurrentContext = "sluice"
	path := filepath.Join(s.Dir, "sluice.kubeconfig")
	return path, clientcmd.WriteToFile(*kubeconfig, path)
}

// identityKinds are the kinds of the install that make up sluice's
// identity.
var identityKinds = map[string]bool{
	"Namespace": true, "ServiceAccount": true,
	"ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true,
}

// installIdentity creates the identity objects of the rendered install.
func (s *Stack) installIdentity(ctx context.Context) error {
	kubectl := exec.CommandContext(ctx, filepath.Join(s.opts.BinDir, "kubectl"), "kustomize", s.opts.InstallDir)
	rendered, err := kubectl.Output()
	if err != nil {
		return fmt.Errorf("kubectl kustomize %s: %w", s.opts.InstallDir, err)
	}
	c, err := client.New(s.Config, client.Options{})
	if err != nil {
		return err
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(rendered), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := decoder.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if !identityKinds[obj.GetKind()] {
			continue
		}
		if err := c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
	}
}
