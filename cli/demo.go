package cli

import "errors"

func (r *runner) demo() error { return errors.New("not implemented yet") }
