"""One module per `charrnn` subcommand; charrnn.cli registers them."""
