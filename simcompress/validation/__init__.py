"""simcompress.validation"""
