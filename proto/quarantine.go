package proto

import "time"

// Quarantine is one quarantined tenant: its calls fail with 423
// tenant_quarantined from Since until Until, for Reason. The master keeps
// quarantines in the store, so that a restart does not lift them.
type Quarantine struct {
	Tenant Id        `json:"tenant"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until"`
	Reason string    `json:"reason"`
}
