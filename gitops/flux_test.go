package gitops

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"

	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	generator "github.com/fluxcd/pkg/kustomize"
	securefs "github.com/fluxcd/pkg/kustomize/filesys"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/openapi"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/sluice-dev/sluice/internal/golden"
)

// fluxKustomization reads a case's Flux Kustomization (flux.yaml) and the
// GitRepository's ignore rules (ignore), as the controllers resolve them.
func fluxKustomization(t *testing.T, dir string) Kustomization {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "flux.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ks := &kustomizev1.Kustomization{}
	if err := sigsyaml.UnmarshalStrict(data, ks); err != nil {
		t.Fatal(err)
	}
	k := Kustomization{Path: ks.Spec.Path, Flux: ks}
	if ks.Spec.PostBuild != nil {
		k.Vars = ks.Spec.PostBuild.Substitute
	}
	if ignore, err := os.ReadFile(filepath.Join(dir, "ignore")); err == nil {
		k.Ignore = string(ignore)
	}
	return k
}

// TestFluxConstructs adopts a Deployment through each construct with which
// a Flux Kustomization changes what its path builds: sluice edits the file
// that defines the live object, and refuses, naming the file, the line and
// the construct, to write a literal over a value something else sets.
func TestFluxConstructs(t *testing.T) {
	tests := []struct {
		name       string
		deployment string
		// container of the Deployment; its name when empty.
		container string
		// adoptErr, when set, are what the adoption's error must say.
		adoptErr []string
		// revertErr, when set, are what a rejection that reverts the
		// images to v0 must say.
		revertErr []string
		replicas  int32
	}{
		{name: "sibling-file", deployment: "plain", replicas: 3},
		{name: "flux-patches", deployment: "web",
			adoptErr: []string{"apps/web/deployment.yaml:8:", "spec.patches of Kustomization flux-system/apps", "replicas: 3"}},
		{name: "flux-images", deployment: "web", replicas: 2,
			revertErr: []string{"spec.images of Kustomization flux-system/apps", "web=registry.example/web:v0", "rollback: record"}},
		{name: "name-prefix", deployment: "prod-web-eu", container: "web", replicas: 2},
		{name: "components", deployment: "web",
			adoptErr: []string{"apps/web/deployment.yaml:8:", "spec.components of Kustomization flux-system/apps"}},
		{name: "substitute-replicas", deployment: "web",
			adoptErr: []string{"apps/web/deployment.yaml:8:", `"${REPLICAS}"`, "postBuild of Kustomization flux-system/apps"}},
		{name: "substitute-image", deployment: "web", replicas: 2,
			revertErr: []string{"apps/web/deployment.yaml:18", `"registry.example/web:${TAG}"`, "postBuild of Kustomization flux-system/apps"}},
		{name: "ignored", deployment: "web", replicas: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join("testdata", "flux", tt.name)
			root := t.TempDir()
			copyTree(t, filepath.Join(dir, "in"), root)
			k := fluxKustomization(t, dir)
			deployment := ObjectID{Kind: "Deployment", Namespace: "shop", Name: tt.deployment}

			a := Adoption{Kustomization: k, Deployment: deployment, Strategy: "canary", LiveReplicas: 1}
			adopted, changed, err := Adopt(root, a)
			if tt.adoptErr != nil {
				wantError(t, err, tt.adoptErr)
				return
			}
			if err != nil || !changed || adopted.Replicas != tt.replicas {
				t.Fatalf("Adopt = %+v, %v, %v; want %d replicas", adopted, changed, err, tt.replicas)
			}
			golden.Tree(t, filepath.Join(dir, "out"), root)
			if _, changed, err := Adopt(root, a); err != nil || changed {
				t.Fatalf("second Adopt: changed=%v, err=%v; want no change", changed, err)
			}

			delivery := ObjectID{Kind: DeliveryKind, Namespace: "shop", Name: tt.deployment}
			container := tt.container
			if container == "" {
				container = tt.deployment
			}
			rejection := Promotion{Kustomization: k, Delivery: delivery, Deployment: deployment,
				Rejection: &deliveryv1.Rejection{TemplateHash: "cccccccccc", Reason: "analysis failed"},
				Revert:    []deliveryv1.ContainerImage{{Name: container, Image: "registry.example/" + container + ":v0"}}}
			_, err = RecordPromotion(root, rejection)
			if tt.revertErr != nil {
				wantError(t, err, tt.revertErr)
				return
			}
			if err != nil {
				t.Fatalf("RecordPromotion(rejection with revert): %v", err)
			}
			objs, err := build(root, k)
			if err != nil {
				t.Fatal(err)
			}
			if o := find(objs, deployment); o == nil || !runsImages(rejection.Revert)(mustObject(t, *o)) {
				t.Fatalf("the build does not run the reverted images %v", rejection.Revert)
			}
		})
	}
}

func wantError(t *testing.T, err error, want []string) {
	t.Helper()
	if !errors.Is(err, ErrCannotEdit) {
		t.Fatalf("err = %v, want ErrCannotEdit", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not say %q: %v", w, err)
		}
	}
}

// TestBuildsAsFlux: sluice's kustomize run gives what Flux's Build gives for
// every case, one after the other, a kustomization with its own OpenAPI
// schema among them: the schema it names applies to its own build (a
// strategic merge by the schema's key) and to no build after it.
func TestBuildsAsFlux(t *testing.T) {
	cases := []string{filepath.Join("testdata", "openapi")}
	flux, err := filepath.Glob(filepath.Join("testdata", "flux", "*"))
	if err != nil || len(flux) == 0 {
		t.Fatalf("no Flux cases: %v", err)
	}
	cases = append(append(cases, flux...), cases...)
	for _, dir := range cases {
		root := t.TempDir()
		copyTree(t, filepath.Join(dir, "in"), root)
		k := Kustomization{Path: "apps/custom"}
		if _, err := os.Stat(filepath.Join(dir, "flux.yaml")); err == nil {
			k = fluxKustomization(t, dir)
		}
		build := func(run func(filesys.FileSystem, string) (resmap.ResMap, error)) string {
			path := filepath.Join(root, k.Path)
			spec, err := k.unstructured()
			if err != nil {
				t.Fatal(err)
			}
			ignored, err := ignoredUnder(root, path, k.Ignore, nil)
			if err != nil {
				t.Fatal(err)
			}
			manifest, kfile, err := generate(root, path, ignored, spec)
			if err != nil {
				t.Fatal(err)
			}
			disk, err := securefs.MakeFsOnDiskSecure(root)
			if err != nil {
				t.Fatal(err)
			}
			fs := securefs.MakeFsInMemory(disk)
			if err := fs.WriteFile(kfile, manifest); err != nil {
				t.Fatal(err)
			}
			res, err := run(fs, path)
			if err != nil {
				t.Fatalf("%s: %v", dir, err)
			}
			out, err := res.AsYaml()
			if err != nil {
				t.Fatal(err)
			}
			return string(out)
		}
		ours := build(kustomize)
		if v := openapi.GetSchemaVersion(); v != builtinSchema {
			t.Fatalf("after building %s kustomize's schema is %q, want the builtin %q", dir, v, builtinSchema)
		}
		if theirs := build(generator.Build); ours != theirs {
			t.Fatalf("%s builds\n%s\nFlux builds\n%s", dir, ours, theirs)
		}
		if strings.HasSuffix(dir, "openapi") && !strings.Contains(ours, "compile:v1") {
			t.Fatalf("the schema's merge key was not used: the patch replaced the list\n%s", ours)
		}
	}
}
