package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
)

// installCRDs installs sluice's, Argo Rollouts', Flux's and the Gateway API's CRDs and the
// controllers' namespaces. It runs before kube-controller-manager starts, so
// that the garbage collector knows the new kinds from its first sync.
func (s *Stack) installCRDs(ctx context.Context) error {
	share := filepath.Join(s.opts.BinDir, "share")
	dirs := []string{
		s.opts.CRDDir,
		filepath.Join(share, "argo-rollouts", "crds"),
		filepath.Join(share, "source-controller", "bases"),
		filepath.Join(share, "kustomize-controller", "bases"),
		filepath.Join(share, "gateway-api", "standard"),
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, dir := range dirs {
		found, err := readCRDs(dir)
		if err != nil {
			return err
		}
		if len(found) == 0 {
			return fmt.Errorf("no CRDs in %s", dir)
		}
		crds = append(crds, found...)
	}
	notification, err := s.notificationCRDs(ctx, filepath.Join(share, "notification-controller", "bases"))
	if err != nil {
		return err
	}
	crds = append(crds, notification...)

	client, err := apiextensionsclient.NewForConfig(s.Config)
	if err != nil {
		return err
	}
	for _, crd := range crds {
		if _, err := client.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating CRD %s: %w", crd.Name, err)
		}
	}
	for _, crd := range crds {
		name := crd.Name
		if err := waitFor(ctx, nil, time.Minute, "CRD "+name+" to be established", func(ctx context.Context) error {
			got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, c := range got.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
			return errors.New("not established")
		}); err != nil {
			return err
		}
	}

	clientset, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		return err
	}
	for _, ns := range []string{FluxNamespace, RolloutsNamespace} {
		_, err := clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// notificationCRDs renders notification-controller's CRDs in dir with
// sluice's Flux component (Options.FluxComponentDir), as a user's Flux
// install does, so that Alerts may name sluice's kinds.
func (s *Stack) notificationCRDs(ctx context.Context, dir string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	component := s.opts.FluxComponentDir
	if component == "" && s.opts.InstallDir != "" {
		component = filepath.Join(s.opts.InstallDir, "..", "flux")
	}
	if component == "" {
		return readCRDs(dir)
	}
	build := filepath.Join(s.Dir, "flux-notification")
	if err := os.MkdirAll(build, 0o755); err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	// kustomize loads components by relative paths only.
	rel, err := filepath.Rel(build, component)
	if err != nil {
		return nil, err
	}
	kustomization := "resources:\n"
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(build, filepath.Base(f)), data, 0o644); err != nil {
			return nil, err
		}
		kustomization += "  - " + filepath.Base(f) + "\n"
	}
	kustomization += "components:\n  - " + rel + "\n"
	if err := os.WriteFile(filepath.Join(build, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, filepath.Join(s.opts.BinDir, "kubectl"), "kustomize", build).Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize %s with %s: %w", dir, component, err)
	}
	rendered := filepath.Join(build, "rendered")
	if err := os.MkdirAll(rendered, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(rendered, "crds.yaml"), out, 0o644); err != nil {
		return nil, err
	}
	crds, err := readCRDs(rendered)
	if err == nil && len(crds) == 0 {
		err = fmt.Errorf("no CRDs in %s", dir)
	}
	return crds, err
}

// readCRDs reads every CustomResourceDefinition in the YAML files of dir.
func readCRDs(dir string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := decoder.Decode(crd); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if crd.Kind == "CustomResourceDefinition" && strings.HasPrefix(crd.APIVersion, "apiextensions.k8s.io/") {
				crds = append(crds, crd)
			}
		}
	}
	return crds, nil
}
