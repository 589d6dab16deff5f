"""What the tests share: real peers started and stopped by the tests (Orthanc, upsd, a booted
box, a crash file system, …), the gateway as a process, and the clients that talk to it. Test
modules import from here, never from each other."""
