package stack

import (
	"context"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// SluiceNamespace is where sluice's ServiceAccount lives.
const SluiceNamespace = "sluice-system"

// sluiceKubeconfig creates sluice's ServiceAccount, binds it to the
// ClusterRole generated from sluice's RBAC markers, and writes a kubeconfig
// with a token of that ServiceAccount, so that a permission missing from the
// markers fails the end-to-end suite.
func (s *Stack) sluiceKubeconfig(ctx context.Context) (string, error) {
	clientset, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(s.opts.RBACDir, "role.yaml"))
	if err != nil {
		return "", err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, role); err != nil {
		return "", err
	}
	create := func(err error) error {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	if err := create(func() error {
		_, err := clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: SluiceNamespace}}, metav1.CreateOptions{})
		return err
	}()); err != nil {
		return "", err
	}
	if err := create(func() error {
		_, err := clientset.CoreV1().ServiceAccounts(SluiceNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sluice"}}, metav1.CreateOptions{})
		return err
	}()); err != nil {
		return "", err
	}
	if err := create(func() error {
		_, err := clientset.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
		return err
	}()); err != nil {
		return "", err
	}
	if err := create(func() error {
		_, err := clientset.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role.Name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: SluiceNamespace, Name: "sluice"}},
		}, metav1.CreateOptions{})
		return err
	}()); err != nil {
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
