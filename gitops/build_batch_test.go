package gitops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestABatchOfAdoptionsChecksOnceAndIsolatesWhatFails: the adoptions of a
// folder written together make one commit; one whose result Flux would
// build wrong (a kustomization patch sets the replicas it moves out) is
// found by the batch's check, fails alone with the error it gets on its
// own, and keeps none of the others from landing together.
func TestABatchOfAdoptionsChecksOnceAndIsolatesWhatFails(t *testing.T) {
	files := map[string]string{
		"apps/kustomization.yaml": `resources:
  - app-0.yaml
  - app-1.yaml
  - app-2.yaml
  - app-3.yaml
patches:
  - target:
      kind: Deployment
      name: app-2
    patch: |
      - op: replace
        path: /spec/replicas
        value: 6
`,
	}
	for i := range 4 {
		files[fmt.Sprintf("apps/app-%d.yaml", i)] = fmt.Sprintf(fleetDeployment, fmt.Sprintf("app-%d", i), "shop")
	}
	f := newFixture(t, files)
	ctx := context.Background()
	author := Signature{Name: "sluice", Email: "sluice@example.com"}

	var changes []Change
	for i := range 4 {
		a := Adoption{Kustomization: Kustomization{Path: "apps"}, Strategy: "canary", LiveReplicas: 1,
			Deployment: ObjectID{Kind: "Deployment", Namespace: "shop", Name: fmt.Sprintf("app-%d", i)}}
		changes = append(changes, Change{Branch: "main", Author: author, Message: fmt.Sprintf("Adopt app-%d", i),
			Edit: func(root string) (bool, error) {
				_, changed, err := Adopt(root, a)
				return changed, err
			}})
	}
	head := strings.TrimSpace(f.git(f.clone(), "rev-parse", "HEAD"))
	results, errs := f.repos.WriteAll(ctx, f.source(), changes)
	for i, err := range errs {
		if i == 2 {
			if !errors.Is(err, ErrCannotEdit) || !strings.Contains(err.Error(), "spec.replicas of Deployment/shop/app-2") {
				t.Errorf("the adoption of app-2 got %v; want ErrCannotEdit naming its replicas", err)
			}
			continue
		}
		if err != nil || !results[i].Pushed {
			t.Errorf("the adoption of app-%d got %+v, %v; want it pushed", i, results[i], err)
		}
	}
	clone := f.clone()
	log := f.git(clone, "log", "--format=%s", head+"..HEAD")
	if log != "Record 3 changes" {
		t.Fatalf("the adoptions made the commits %q; want one recording three", log)
	}
	changed := f.git(clone, "show", "--name-only", "--format=", "HEAD")
	for i := range 4 {
		want := i != 2
		if got := strings.Contains(changed, fmt.Sprintf("apps/app-%d-delivery.yaml", i)); got != want {
			t.Errorf("the commit adds app-%d's Delivery: %v, want %v (%q)", i, got, want, changed)
		}
	}
	if strings.Contains(changed, "apps/app-2.yaml") {
		t.Errorf("app-2's failed adoption reached Git: %q", changed)
	}
}

// TestABatchChecksTheBuildOnceItsEditsAreMade: in a batch, an edit finds
// what it edits in the tree as the batch found it, and its check of the
// build runs on the batch's result, after every edit; out of a batch the
// check runs at once, on the build of the tree.
func TestABatchChecksTheBuildOnceItsEditsAreMade(t *testing.T) {
	root := t.TempDir()
	copyTree(t, "testdata/adopt/plain-folder/in", root)
	k := Kustomization{Path: "apps/web"}
	before, err := build(root, k)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	changed, err := inBatch(root, 2, func(i int) (bool, error) {
		objs, err := locate(root, k)
		if err != nil {
			return false, err
		}
		if len(objs) != len(before) {
			return false, fmt.Errorf("edit %d located %d objects, want the %d the batch found", i, len(objs), len(before))
		}
		// The tree changes: a new object in the folder.
		write(t, fmt.Sprintf("%s/apps/web/extra-%d.yaml", root, i), fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-%d\n", i))
		return true, checkBuild(root, k, objs, true, func(err error) error { return err }, func(after []built) error {
			order = append(order, fmt.Sprintf("check %d: %d objects", i, len(after)))
			return nil
		})
	})
	if err != nil || len(changed) != 2 || !changed[0] || !changed[1] {
		t.Fatalf("inBatch = %v, %v", changed, err)
	}
	want := []string{fmt.Sprintf("check 0: %d objects", len(before)+2), fmt.Sprintf("check 1: %d objects", len(before)+2)}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("the checks ran as %q; want %q", order, want)
	}

	// A check that fails names its edit.
	_, err = inBatch(root, 2, func(i int) (bool, error) {
		return false, checkBuild(root, k, nil, false, nil, func([]built) error {
			if i == 1 {
				return ErrCannotEdit
			}
			return nil
		})
	})
	var failed *failedEdit
	if !errors.As(err, &failed) || failed.index != 1 || !errors.Is(err, ErrCannotEdit) {
		t.Fatalf("a failing check of edit 1 got %v", err)
	}
	if batchOf(root) != nil {
		t.Fatal("the batch is still under way after it ended")
	}

	// Out of a batch, at once.
	ran := false
	if err := checkBuild(root, k, before, false, nil, func(after []built) error {
		ran = len(after) == len(before)
		return nil
	}); err != nil || !ran {
		t.Fatalf("checkBuild out of a batch: ran=%v err=%v", ran, err)
	}
}
