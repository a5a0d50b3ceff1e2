package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"k8s.io/client-go/kubernetes"
)

// apiRequests are the requests the API server answered, by verb and
// resource, from its apiserver_request_duration_seconds histogram: how
// many, and the seconds it spent on them. Watches are left out: they last
// as long as their client.
type apiRequests map[string]apiCost

type apiCost struct {
	count   float64
	seconds float64
}

// scrapeAPIRequests reads the API server's request histogram.
func (b *bench) scrapeAPIRequests(ctx context.Context) (apiRequests, error) {
	clientset, err := kubernetes.NewForConfig(b.stack.Config)
	if err != nil {
		return nil, err
	}
	body, err := clientset.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's metrics: %w", err)
	}
	return parseAPIRequests(bytes.NewReader(body))
}

func parseAPIRequests(r io.Reader) (apiRequests, error) {
	const metric = "apiserver_request_duration_seconds_"
	requests := apiRequests{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1024*1024), 1024*1024)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), metric)
		if !ok {
			continue
		}
		series, rest, ok := strings.Cut(rest, "{")
		if !ok || (series != "count" && series != "sum") {
			continue
		}
		labelText, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		labels := parseLabels(labelText)
		switch labels["verb"] {
		case "WATCH", "WATCHLIST", "CONNECT":
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", sc.Text(), err)
		}
		key := labels["verb"] + " " + labels["resource"]
		if s := labels["subresource"]; s != "" {
			key += "/" + s
		}
		if labels["dry_run"] != "" {
			key += " (dry run)"
		}
		c := requests[key]
		if series == "count" {
			c.count += v
		} else {
			c.seconds += v
		}
		requests[key] = c
	}
	return requests, sc.Err()
}

// parseLabels parses the labels of a series, k="v" pairs separated by
// commas; the values the API server's histogram holds need no unquoting
// beyond the quotes.
func parseLabels(text string) map[string]string {
	labels := map[string]string{}
	for text != "" {
		k, rest, ok := strings.Cut(text, `="`)
		if !ok {
			break
		}
		v, rest, _ := strings.Cut(rest, `"`)
		labels[k] = v
		text = strings.TrimPrefix(rest, ",")
	}
	return labels
}

// since is what the API server answered from earlier to r.
func (r apiRequests) since(earlier apiRequests) apiRequests {
	d := apiRequests{}
	for k, c := range r {
		e := earlier[k]
		if c.count > e.count {
			d[k] = apiCost{count: c.count - e.count, seconds: c.seconds - e.seconds}
		}
	}
	return d
}

func (r apiRequests) total() apiCost {
	var t apiCost
	for _, c := range r {
		t.count, t.seconds = t.count+c.count, t.seconds+c.seconds
	}
	return t
}

// printAPIRequests prints the requests the API server spent the most time
// on in each run, up to top of them.
func printAPIRequests(out io.Writer, top int, argo, sluice apiRequests) {
	fmt.Fprintf(out, "\nThe API server's requests (count, and seconds spent answering), the %d costliest of each run:\n", top)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "Argo alone, to all Healthy\t\t\tsluice, to stable applied back\t\t\t\n")
	costliest := func(r apiRequests) []string {
		keys := slices.Collect(maps.Keys(r))
		slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(r[b].seconds, r[a].seconds) })
		return keys[:min(top, len(keys))]
	}
	a, s := costliest(argo), costliest(sluice)
	cell := func(r apiRequests, keys []string, i int) string {
		if i >= len(keys) {
			return "\t\t"
		}
		c := r[keys[i]]
		return fmt.Sprintf("%s\t%.0f\t%.1f s", keys[i], c.count, c.seconds)
	}
	for i := range max(len(a), len(s)) {
		fmt.Fprintf(w, "%s\t%s\t\n", cell(argo, a, i), cell(sluice, s, i))
	}
	argoTotal, sluiceTotal := argo.total(), sluice.total()
	fmt.Fprintf(w, "all\t%.0f\t%.1f s\tall\t%.0f\t%.1f s\t\n", argoTotal.count, argoTotal.seconds, sluiceTotal.count, sluiceTotal.seconds)
	_ = w.Flush()
}
