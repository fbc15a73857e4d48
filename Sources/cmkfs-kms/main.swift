KMSCommand.main()
