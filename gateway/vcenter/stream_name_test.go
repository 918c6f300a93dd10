package vcenter

import "testing"

// TestConverterStream: every event carries the stream's name, which the
// router's per-stream watermarks and the processors' `streams` go by.
func TestConverterStream(t *testing.T) {
	c := NewConverter(goldenSource)
	c.Stream = "vc-east"
	if got := c.Convert(goldenUUID, specVmPoweredOff()).Stream; got != "vc-east" {
		t.Errorf("event stream %q, want vc-east", got)
	}
}
