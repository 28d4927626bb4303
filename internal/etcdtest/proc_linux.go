package etcdtest

import "syscall"

// sysProcAttr makes an etcd die with the test binary that started it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
