// The entry point only dispatches; every command lives in its own file.
CMKFSCommand.main()
