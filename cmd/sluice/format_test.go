package main

import (
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	deliveryv1 "github.com/sluice-dev/sluice/apis/v1alpha1"
)

const approval = `Approve shop/web: template 6d4d78d2f4 at step 2

Images: web=registry.example/web:v2
Analysis so far: web-7c9f-2-1 Successful (success-rate Successful)

Sluice-Delivery: shop/web
Sluice-Action: approve
Sluice-Template-Hash: 6d4d78d2f4
Sluice-Step: 2
`

func TestParseTrailers(t *testing.T) {
	for _, c := range []struct {
		name, message string
		want          map[string]string
	}{
		{"approval", approval, map[string]string{"Sluice-Delivery": "shop/web", "Sluice-Action": "approve", "Sluice-Template-Hash": "6d4d78d2f4", "Sluice-Step": "2"}},
		{"subject only", "Sluice-Action: approve\n", map[string]string{}},
		{"last paragraph is prose", "Release v2\n\nThis is: not a trailer block\nbecause of this line\n", map[string]string{}},
		{"CRLF", "Reject a/b: template x\r\n\r\nSluice-Delivery: a/b\r\nSluice-Action: reject\r\n", map[string]string{"Sluice-Delivery": "a/b", "Sluice-Action": "reject"}},
	} {
		got := parseTrailers(c.message)
		if len(got) != len(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
			continue
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", c.name, k, got[k], v)
			}
		}
	}
	if got, want := bodyOf(approval), "Images: web=registry.example/web:v2\nAnalysis so far: web-7c9f-2-1 Successful (success-rate Successful)"; got != want {
		t.Errorf("bodyOf = %q, want %q", got, want)
	}
	if got, want := analysisOf(approval), "Analysis so far: web-7c9f-2-1 Successful (success-rate Successful)"; got != want {
		t.Errorf("analysisOf = %q, want %q", got, want)
	}
	reject := "Reject shop/web: template abc\n\nmetric success-rate failed\nsecond line\n\nSluice-Delivery: shop/web\nSluice-Action: reject\n"
	if got, want := analysisOf(reject), "metric success-rate failed"; got != want {
		t.Errorf("analysisOf(reject) = %q, want %q", got, want)
	}
}

func delivery(ns, name string, phase deliveryv1.DeliveryPhase) deliveryv1.Delivery {
	return deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1}, Status: deliveryv1.DeliveryStatus{
		ObservedGeneration: 1, Phase: phase,
		Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Message: "Rollout web serves template aaaaaaaaaa\nsecond line"}}}}
}

func TestTable(t *testing.T) {
	healthy := delivery("shop", "web", deliveryv1.PhaseHealthy)
	healthy.Status.StableTemplateHash = "aaaaaaaaaa"
	gated := delivery("shop", "api", deliveryv1.PhaseWaitingForApproval)
	gated.Status.CurrentStep, gated.Status.CanaryWeight = ptr.To[int32](2), ptr.To[int32](50)
	gated.Status.StableTemplateHash, gated.Status.CandidateTemplateHash = "aaaaaaaaaa", "bbbbbbbbbb"
	gated.Status.PendingPromotionBranch = "sluice/promote/shop/api/2-bbbbbbbbbb"
	gated.Spec.Suspend = true
	fresh := deliveryv1.Delivery{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "new"}}

	var b strings.Builder
	if err := printTable(&b, true, []deliveryv1.Delivery{healthy, gated, fresh}); err != nil {
		t.Fatal(err)
	}
	want := `NAMESPACE   NAME   PHASE                STEP   WEIGHT   STABLE       CANDIDATE    SUSPENDED   READY     MESSAGE                                  PROMOTION BRANCH
shop        web    Healthy              -      -        aaaaaaaaaa   -            false       True      Rollout web serves template aaaaaaaaaa   -
shop        api    WaitingForApproval   2      50       aaaaaaaaaa   bbbbbbbbbb   true        True      Rollout web serves template aaaaaaaaaa   sluice/promote/shop/api/2-bbbbbbbbbb
other       new    Pending              -      -        -            -            false       Unknown   not reconciled yet                       -
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}

	// The watch's lines have the table's columns.
	var cols columns
	rows := [][]string{header(true)}
	for _, d := range []deliveryv1.Delivery{healthy, gated, fresh} {
		rows = append(rows, row(&d, true))
	}
	for _, r := range rows {
		cols.fit(r)
	}
	var lines []string
	for _, r := range rows {
		lines = append(lines, cols.line(r))
	}
	if got := strings.Join(lines, "\n") + "\n"; got != want {
		t.Errorf("watch lines:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderTree(t *testing.T) {
	root := (&node{kind: "Delivery", name: "web", status: "◌ WaitingForApproval", info: "step 2"}).add(
		(&node{kind: "Kustomization", name: "flux-system/shop", status: "✔ Ready=True"}).add(
			&node{kind: "GitRepository", name: "flux-system/shop", status: "✔ Ready=True", info: "fetched main@sha1:0123"}),
		(&node{kind: "Rollout", name: "web", status: "॥ Paused"}).add(
			(&node{kind: "ReplicaSet", name: "web-7c9f", status: "✔ Healthy", info: "canary"}).add(
				&node{kind: "Pod", name: "web-7c9f-x", status: "✔ Running"}),
			(&node{kind: "AnalysisRun", name: "web-7c9f-2-1", status: "✔ Successful"}).add(
				&node{kind: "Metric", name: "success-rate", status: "Successful", info: "[0.998] ✔ 1"})))
	var b strings.Builder
	if err := renderTree(&b, root); err != nil {
		t.Fatal(err)
	}
	want := `NAME                    KIND           STATUS                INFO
web                     Delivery       ◌ WaitingForApproval  step 2
├──flux-system/shop     Kustomization  ✔ Ready=True
│  └──flux-system/shop  GitRepository  ✔ Ready=True          fetched main@sha1:0123
└──web                  Rollout        ॥ Paused
   ├──web-7c9f          ReplicaSet     ✔ Healthy             canary
   │  └──web-7c9f-x     Pod            ✔ Running
   └──web-7c9f-2-1      AnalysisRun    ✔ Successful
      └──success-rate   Metric         Successful            [0.998] ✔ 1
`
	if b.String() != want {
		t.Errorf("tree:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestHistoryOf reads a history with a hand-made merge of a promotion
// branch, sluice's own approval and promotion, and others' commits.
func TestHistoryOf(t *testing.T) {
	repo, err := git.Init(memory.NewStorage(), memfs.New())
	if err != nil {
		t.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	commit := func(message, author string, parents ...plumbing.Hash) plumbing.Hash {
		t.Helper()
		when = when.Add(time.Minute)
		sig := &object.Signature{Name: author, Email: strings.ToLower(author) + "@example.com", When: when}
		h, err := wt.Commit(message, &git.CommitOptions{Author: sig, Committer: sig, AllowEmptyCommits: true, Parents: parents})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	trailers := func(action, hash string) string {
		return "\n\nSluice-Delivery: shop/web\nSluice-Action: " + action + "\nSluice-Template-Hash: " + hash + "\n"
	}
	commit("Add the shop", "Ada")
	adopt := commit("Adopt Deployment shop/web for canary delivery"+trailers("adopt", "aaaaaaaaaa"), "sluice")
	commit("Adopt Deployment shop/api for canary delivery\n\nSluice-Delivery: shop/api\nSluice-Action: adopt\n", "sluice")
	main := commit("Release web v2", "Ada")
	gate := commit(approval, "sluice", adopt)
	merge := commit("Merge the approval of web v2", "Bob", main, gate)
	commit("Promote shop/web: template 6d4d78d2f4 is stable"+trailers("promote", "6d4d78d2f4"), "sluice", merge)
	// Records that went together: web's is not the last.
	commit("Record 2 changes\n\nPromote shop/web: template 0b0b0b0b0b is stable"+strings.TrimSuffix(trailers("promote", "0b0b0b0b0b"), "\n")+
		"\n\n---\n\nPromote shop/api: template 0c0c0c0c0c is stable\n\nSluice-Delivery: shop/api\nSluice-Action: promote\nSluice-Template-Hash: 0c0c0c0c0c\n", "sluice")
	head, err := repo.Head()
	if err != nil {
		t.Fatal(err)
	}
	c, err := repo.CommitObject(head.Hash())
	if err != nil {
		t.Fatal(err)
	}
	records, err := historyOf(c, "shop/web", 50)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := printHistory(&b, records); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		"2026-11-25T10:08:00Z   promote   0b0b0b0b0b   -      sluice <sluice@example.com>   ",
		"Promote shop/web: template 0b0b0b0b0b is stable\n",
		"2026-11-25T10:07:00Z   promote   6d4d78d2f4   -      sluice <sluice@example.com>   ",
		"2026-11-25T10:06:00Z   approve   6d4d78d2f4   2      Bob <bob@example.com>         " + merge.String()[:10] + "   Merge the approval of web v2 — Analysis so far: web-7c9f-2-1 Successful (success-rate Successful)\n",
		"2026-11-25T10:02:00Z   adopt     aaaaaaaaaa   -      sluice <sluice@example.com>   ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("history lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "\n") != 5 || strings.Contains(got, "shop/api") {
		t.Errorf("history holds other lines:\n%s", got)
	}
	if _, err := historyOf(c, "shop/web", 1); err != nil {
		t.Fatal(err)
	}
}

func TestJudge(t *testing.T) {
	healthy := delivery("shop", "web", deliveryv1.PhaseHealthy)
	if judge(&healthy) != healthyVerdict {
		t.Error("a Healthy, Ready, observed Delivery without candidate is healthy")
	}
	stale := healthy
	stale.Generation = 2
	if judge(&stale) != pending {
		t.Error("a Delivery whose new generation is not observed is not healthy yet")
	}
	candidate := healthy
	candidate.Status.CandidateTemplateHash = "b"
	if judge(&candidate) != pending {
		t.Error("a Delivery with a candidate is not healthy yet")
	}
	for _, p := range []deliveryv1.DeliveryPhase{deliveryv1.PhaseRejected, deliveryv1.PhaseFailed} {
		d := delivery("shop", "web", p)
		if judge(&d) != rejected {
			t.Errorf("%s is rejected", p)
		}
	}
}
