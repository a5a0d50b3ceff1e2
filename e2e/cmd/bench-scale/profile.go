package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// profileSlice is how long each CPU profile recordProfiles takes runs.
const profileSlice = 20 * time.Second

// recordProfiles records sluice's CPU profile from its pprof handlers, in
// slices of profileSlice written to prefix-<process>-NNN.pprof, until ctx
// ends; it returns the files written. `go tool pprof -top bin/sluice
// prefix-*.pprof` merges them. After each slice it also takes the heap
// profile, prefix-<process>-NNN.heap, for where the memory is at
// that moment (`go tool pprof -sample_index=inuse_space`).
func recordProfiles(ctx context.Context, p sluiceProcess, prefix string) ([]string, error) {
	base := strings.TrimSuffix(p.metricsURL, "/metrics")
	var files []string
	for i := 0; ctx.Err() == nil; i++ {
		file := fmt.Sprintf("%s-%s-%03d.pprof", prefix, p.name, i)
		err := fetchProfile(ctx, base+fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(profileSlice.Seconds())), file)
		switch {
		case err == nil:
			files = append(files, file)
			heap := fmt.Sprintf("%s-%s-%03d.heap", prefix, p.name, i)
			if err := fetchProfile(ctx, base+"/debug/pprof/heap", heap); err != nil && ctx.Err() == nil {
				return files, err
			}
		case ctx.Err() != nil:
			// The slice the end cut short holds nothing.
			_ = os.Remove(file)
		default:
			return files, err
		}
	}
	return files, nil
}

func fetchProfile(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}
