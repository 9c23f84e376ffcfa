"""Understanding and building mail. Pure functions over bytes and text: never touches the database."""
