package volume

// crash abandons the engine as a killed process would: descriptors close,
// nothing is flushed or checkpointed, the lock goes.
func (e *Engine) crash() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, rt := range e.vols {
		for _, l := range rt.idx.layers {
			l.close()
		}
	}
	for _, rt := range e.snaps {
		for _, l := range rt.idx.layers {
			l.close()
		}
	}
	e.vols, e.snaps = nil, nil
	e.lock.Close()
	e.lock = nil
}

// stopAt makes the engine fail at the named step of a multi-step change.
func (e *Engine) stopAt(step string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stop = func(s string) error {
		if s == step {
			return err
		}
		return nil
	}
}
