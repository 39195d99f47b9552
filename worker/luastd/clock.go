package luastd

import "time"

// processStart is when the package was initialised: os.clock falls back
// to the time elapsed since then where CPU time is unavailable.
var processStart = time.Now()

func sinceStart() float64 { return time.Since(processStart).Seconds() }
