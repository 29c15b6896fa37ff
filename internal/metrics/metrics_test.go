package metrics_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cairnproject/cairn/internal/metrics"
)

func TestArchiveGauges(t *testing.T) {
	m := metrics.New()
	samples := []metrics.ArchiveSample{
		{Instance: "a", Streaming: true, LagSeconds: 0.25, Gaps: 0, SecondsSinceComplete: 1.5, SlotSafeBytes: 1 << 20,
			RestorePoints: 3, SecondsSinceRestorePoint: 42},
		{Instance: "b", Streaming: false, Gaps: 2, SecondsSinceComplete: -1, SlotSafeBytes: -1,
			SecondsSinceRestorePoint: -1, RestorePointFailures: 4},
	}
	m.Archives(func() []metrics.ArchiveSample { return samples })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`cairn_archive_streaming{instance="a"} 1`,
		`cairn_archive_streaming{instance="b"} 0`,
		`cairn_archive_lag_seconds{instance="a"} 0.25`,
		`cairn_archive_gaps{instance="b"} 2`,
		`cairn_archive_complete_age_seconds{instance="a"} 1.5`,
		`cairn_archive_slot_safe_bytes{instance="a"} 1.048576e+06`,
		`cairn_archive_slot_safe_bytes{instance="b"} -1`,
		`cairn_restore_points{instance="a"} 3`,
		`cairn_restore_points{instance="b"} 0`,
		`cairn_restore_point_age_seconds{instance="a"} 42`,
		`cairn_restore_point_age_seconds{instance="b"} -1`,
		`cairn_restore_point_failures{instance="a"} 0`,
		`cairn_restore_point_failures{instance="b"} 4`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("no %s in:\n%s", want, body)
		}
	}
	// No archive: no series, and the scrape still works.
	samples = nil
	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "cairn_archive_lag_seconds{") {
		t.Fatalf("scrape without archives: %d\n%s", rec.Code, rec.Body)
	}
}
