package cli

import "errors"

// login and logout: (skeleton, being completed)
func (r *runner) login() error  { return errors.New("not implemented yet") }
func (r *runner) logout() error { return errors.New("not implemented yet") }
