package metrics

import (
	"slices"
	"strings"
	"testing"
)

func TestFamilies(t *testing.T) {
	m := New()
	fams := m.Families()
	// A family with a series appears in Gather; each one Gather reports must
	// be listed, with its type.
	m.StreamEvents.WithLabelValues("s").Inc()
	m.DeliveryLag.WithLabelValues("p").Observe(1)
	m.QueueDepth.WithLabelValues("p", "d").Set(1)
	gathered, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range gathered {
		if !strings.HasPrefix(mf.GetName(), "eventrouter_") {
			continue
		}
		n++
		f := fams[mf.GetName()]
		if want := strings.ToLower(mf.GetType().String()); f.Type != want {
			t.Errorf("%s: Families says %q, the registry %q", mf.GetName(), f.Type, want)
		}
		var labels []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, lp.GetName())
		}
		if !slices.Equal(slices.Sorted(slices.Values(f.Labels)), labels) { // Gather sorts them
			t.Errorf("%s: Families says labels %v, the registry %v", mf.GetName(), f.Labels, labels)
		}
	}
	if n != 4 {
		t.Errorf("gathered %d eventrouter_ families, want 4", n)
	}
	// Families lists those without a series too.
	if fams["eventrouter_checkpoint_last_write_timestamp_seconds"].Type != "gauge" || fams["eventrouter_filter_duration_seconds"].Type != "histogram" {
		t.Errorf("Families lacks families without a series: %v", fams)
	}
	fams["x"] = Family{}
	if _, ok := m.Families()["x"]; ok {
		t.Errorf("Families returns its own map")
	}
}
