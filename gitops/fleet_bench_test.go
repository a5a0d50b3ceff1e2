package gitops

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

// BenchmarkRecordFleet times the write that records the stable templates
// of a whole adopted fleet in one commit (100 folders of 10 Deliveries,
// as make bench-scale adopts), over smart HTTP: as it goes when the
// branch stands still, and when another writer pushed a commit of their
// own to a file of no Kustomization while sluice edited (the git CLI's
// push is in the time), so that sluice's push is refused once and the
// write goes again on the new head.
func BenchmarkRecordFleet(b *testing.B) {
	const folders, apps = 100, 10
	_, url, authURL := benchRepository(b)

	// The fleet, adopted, as one commit.
	person := filepath.Join(b.TempDir(), "fleet")
	gitCLI(b, "", "clone", "--quiet", authURL, person)
	var promotions []Promotion
	writeFleet(b, person, folders, apps)
	for i := range folders {
		ns := fmt.Sprintf("fleet-%03d", i)
		k := Kustomization{Path: fmt.Sprintf("fleet/k%03d", i)}
		_, err := inBatch(person, apps, func(j int) (bool, error) {
			app := fmt.Sprintf("app-%03d", j)
			_, changed, err := Adopt(person, Adoption{Kustomization: k, Deployment: ObjectID{Kind: "Deployment", Namespace: ns, Name: app}, Strategy: "canary", LiveReplicas: 1})
			promotions = append(promotions, Promotion{
				Kustomization: k,
				Delivery:      ObjectID{Kind: "Delivery", Namespace: ns, Name: app},
				Deployment:    ObjectID{Kind: "Deployment", Namespace: ns, Name: app},
			})
			return changed, err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	gitCLI(b, person, "add", "-A")
	gitCLI(b, person, "commit", "--quiet", "-m", "Adopt the fleet")
	gitCLI(b, person, "push", "--quiet", "origin", "HEAD:main")

	src := Source{URL: url, Branch: "main", Credentials: Credentials{Username: user, Password: password}}
	author := Signature{Name: "sluice", Email: "sluice@example.com"}
	repos := NewRepositories(b.TempDir(), WithCredentialsOverHTTP())
	n, m := 0, 0
	personPushes := func() {
		m++
		gitCLI(b, person, "pull", "--quiet", "--rebase", "origin", "main")
		write(b, filepath.Join(person, "README.md"), fmt.Sprintf("change %d\n", m))
		gitCLI(b, person, "add", "-A")
		gitCLI(b, person, "commit", "--quiet", "-m", fmt.Sprintf("change %d", m))
		gitCLI(b, person, "push", "--quiet", "origin", "HEAD:main")
	}
	record := func(b *testing.B, race bool) {
		n++
		changes := make([]Change, len(promotions))
		for i, p := range promotions {
			p.Stable = &deliveryv1.StableRelease{TemplateHash: fmt.Sprintf("template-%d", n)}
			changes[i] = Change{Branch: "main", Author: author,
				Message: fmt.Sprintf("Promote %s: template-%d is stable", p.Delivery, n),
				Edit:    func(root string) (bool, error) { return RecordPromotion(root, p) }}
		}
		if race {
			edit := changes[0].Edit
			changes[0].Edit = func(root string) (bool, error) {
				if race {
					race = false
					personPushes()
				}
				return edit(root)
			}
		}
		results, errs := repos.WriteAll(context.Background(), src, changes)
		for i := range changes {
			if errs[i] != nil || !results[i].Pushed {
				b.Fatalf("write %d: %+v, %v", i, results[i], errs[i])
			}
		}
		b.ReportMetric(float64(results[0].Attempts), "attempts")
		b.ReportMetric(float64(results[0].Replayed), "replayed")
	}
	// The working copy's clone, and the first record, which parks every
	// Deployment too.
	record(b, false)

	b.Run("branch still", func(b *testing.B) {
		for b.Loop() {
			record(b, false)
		}
	})
	b.Run("branch moved", func(b *testing.B) {
		for b.Loop() {
			record(b, true)
		}
	})
}
