from pi_synth.cli import main

raise SystemExit(main())
